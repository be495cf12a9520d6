"""PostgreSQL's word list for search (search_index: a word prefix is expanded
into the indexed words it stands for, so GIN is asked for exact words).

The list is created and filled from the index already there: one read of
the index (ts_stat), no lock that the message writer waits for. Words
written from then on go into the list in the writer's own transaction.
SQLite has had its list since 0004: nothing to do.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops


async def create_word_list(apps, schema_editor) -> None:
    from app.services.search_index import PostgresTsvector, backend_for
    from app.services.sql import is_postgres

    conn = schema_editor.client
    if is_postgres(conn):
        await conn.execute_script(PostgresTsvector.WORDS_SCHEMA)
        await backend_for(True).fill_words(conn)


async def drop_word_list(apps, schema_editor) -> None:
    from app.services.sql import is_postgres

    conn = schema_editor.client
    if is_postgres(conn):
        await conn.execute_script('DROP TABLE IF EXISTS "message_search_words"')


class Migration(migrations.Migration):
    dependencies = [('models', '0009_search_gin_fastupdate')]

    initial = False

    operations = [
        ops.RunPython(create_word_list, drop_word_list),
    ]

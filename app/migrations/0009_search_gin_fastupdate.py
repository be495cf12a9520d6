"""The PostgreSQL search index without GIN's pending list: the insert that
found the list full merged it inside the message writer's transaction.
0011 turns the list back on, with a merger that keeps it short.

Changing the option takes a moment's lock on the index; the entries already
pending (at most GIN's 4 MB list) are then merged into the index, so
searches stop reading the list at once. SQLite: nothing to do.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops


async def fastupdate_off(apps, schema_editor) -> None:
    from app.services.sql import is_postgres

    conn = schema_editor.client
    if is_postgres(conn):
        await conn.execute_script('ALTER INDEX "message_search_doc_gin" SET (fastupdate = off)')
        await conn.execute_script("SELECT gin_clean_pending_list('message_search_doc_gin')")


async def fastupdate_on(apps, schema_editor) -> None:
    from app.services.sql import is_postgres

    conn = schema_editor.client
    if is_postgres(conn):
        await conn.execute_script('ALTER INDEX "message_search_doc_gin" SET (fastupdate = on)')


class Migration(migrations.Migration):
    dependencies = [('models', '0008_server_secrets')]

    initial = False

    operations = [
        ops.RunPython(fastupdate_off, fastupdate_on),
    ]

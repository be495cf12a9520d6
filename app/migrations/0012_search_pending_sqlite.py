"""SQLite: the search index's pending list (search_index.SqliteFts5.SCHEMA says
why), an empty table; PendingListMerger moves its entries into the FTS5 table.
PostgreSQL: nothing to do (GIN has its own, 0011).
"""

from tortoise import migrations
from tortoise.migrations import operations as ops


async def create_pending_list(apps, schema_editor) -> None:
    from app.services.search_index import PENDING_SCHEMA_SQLITE
    from app.services.sql import is_postgres

    conn = schema_editor.client
    if not is_postgres(conn):
        await conn.execute_script(PENDING_SCHEMA_SQLITE)


async def drop_pending_list(apps, schema_editor) -> None:
    from app.services.sql import is_postgres

    conn = schema_editor.client
    if not is_postgres(conn):
        # Its entries go into the index first: they are messages' only entries.
        await conn.execute_script(
            'INSERT OR REPLACE INTO "message_search" (rowid, doc) '
            'SELECT "id", "doc" FROM "message_search_pending";'
            'DROP TABLE IF EXISTS "message_search_pending"')


class Migration(migrations.Migration):
    dependencies = [('models', '0011_search_pending_list')]

    initial = False

    operations = [
        ops.RunPython(create_pending_list, drop_pending_list),
    ]

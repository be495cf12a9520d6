"""The message search index (app/services/search_index.py).

It is not a Tortoise model (an FTS5 virtual table on SQLite, a tsvector table
with a GIN index on PostgreSQL), so the migration runs the backend's own DDL.
Both are created empty, which takes no time and holds no lock on `messages`;
new messages are indexed by the message writer from then on, and history
written before is indexed by `python -m app search-backfill` in short batches
while the server runs.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops


async def create_search_index(apps, schema_editor) -> None:
    from app.services.search_index import backend_for
    from app.services.sql import is_postgres

    conn = schema_editor.client
    await backend_for(is_postgres(conn)).ensure_schema(conn)


async def drop_search_index(apps, schema_editor) -> None:
    await schema_editor.client.execute_script(
        'DROP TABLE IF EXISTS "message_search"; DROP TABLE IF EXISTS "message_search_words";'
        'DROP TABLE IF EXISTS "message_search_pending";')


class Migration(migrations.Migration):
    dependencies = [('models', '0003_push')]

    initial = False

    operations = [
        ops.RunPython(create_search_index, drop_search_index),
    ]

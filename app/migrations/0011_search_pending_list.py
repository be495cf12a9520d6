"""The PostgreSQL search index with GIN's pending list again, merged by a
background task (search_index.PostgresTsvector.SCHEMA and PendingListMerger
say why), and without its foreign key to `messages`.

Both changes take a moment's lock and read no rows. SQLite: nothing to do.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops


async def pending_list_on(apps, schema_editor) -> None:
    from app.services.sql import is_postgres

    conn = schema_editor.client
    if is_postgres(conn):
        await conn.execute_script(
            'ALTER INDEX "message_search_doc_gin" SET (fastupdate = on);'
            'ALTER TABLE "message_search" '
            'DROP CONSTRAINT IF EXISTS "message_search_message_id_fkey"')


async def pending_list_off(apps, schema_editor) -> None:
    from app.services.sql import is_postgres

    conn = schema_editor.client
    if is_postgres(conn):
        await conn.execute_script(
            'ALTER INDEX "message_search_doc_gin" SET (fastupdate = off);'
            "SELECT gin_clean_pending_list('message_search_doc_gin');"
            # NOT VALID: the key holds for new rows without reading the old ones.
            'ALTER TABLE "message_search" ADD CONSTRAINT "message_search_message_id_fkey" '
            'FOREIGN KEY ("message_id") REFERENCES "messages" ("id") ON DELETE CASCADE '
            'NOT VALID')


class Migration(migrations.Migration):
    dependencies = [('models', '0010_search_words_pg')]

    initial = False

    operations = [
        ops.RunPython(pending_list_on, pending_list_off),
    ]

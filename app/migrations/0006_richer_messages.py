from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

async def restore_message_uniques(apps, schema_editor) -> None:
    # SQLite has no ALTER COLUMN: the type change above rebuilds "messages" and
    # the rebuild leaves out its UNIQUE constraints; put them back as unique
    # indexes (PostgreSQL altered the column in place and kept them).
    if schema_editor.client.capabilities.dialect != "sqlite":
        return
    await schema_editor.client.execute_script(
        'CREATE UNIQUE INDEX IF NOT EXISTS "uid_messages_conversation_seq" '
        'ON "messages" ("conversation_id", "seq"); '
        'CREATE UNIQUE INDEX IF NOT EXISTS "uid_messages_sender_client_msg_id" '
        'ON "messages" ("sender_id", "client_msg_id");')


class Migration(migrations.Migration):
    dependencies = [('models', '0005_signin')]

    initial = False

    operations = [
        ops.CreateModel(
            name='MessageReaction',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('message', fields.ForeignKeyField('models.Message', source_field='message_id', db_constraint=True, to_field='id', related_name='reactions', on_delete=OnDelete.CASCADE)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='reactions', on_delete=OnDelete.CASCADE)),
                ('emoji', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'message_reactions', 'app': 'models', 'unique_together': (('message', 'user', 'emoji'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MessageVersion',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('message', fields.ForeignKeyField('models.Message', source_field='message_id', db_constraint=True, to_field='id', related_name='versions', on_delete=OnDelete.CASCADE)),
                ('text', fields.TextField(unique=False)),
                ('data', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('written_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('replaced_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'message_versions', 'app': 'models', 'indexes': [Index(fields=['message_id', 'id'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Pin',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('conversation', fields.ForeignKeyField('models.Conversation', source_field='conversation_id', db_constraint=True, to_field='id', related_name='pins', on_delete=OnDelete.CASCADE)),
                ('message', fields.OneToOneField('models.Message', source_field='message_id', db_constraint=True, to_field='id', related_name='pin', on_delete=OnDelete.CASCADE)),
                ('pinned_by', fields.ForeignKeyField('models.User', source_field='pinned_by_id', null=True, db_constraint=True, to_field='id', related_name='pins', on_delete=OnDelete.SET_NULL)),
                ('pinned_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'pins', 'app': 'models', 'indexes': [Index(fields=['conversation_id', 'pinned_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Conversation',
            name='change_seq',
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='Conversation',
            name='members_can_pin',
            field=fields.BooleanField(default=False, db_default=False),
        ),
        ops.AddField(
            model_name='Membership',
            name='delivered_seq',
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.AlterField(
            model_name='Message',
            name='type',
            field=fields.CharField(max_length=16),
        ),
        ops.RunPython(restore_message_uniques),
        ops.AddField(
            model_name='Message',
            name='change_seq',
            field=fields.BigIntField(null=True),
        ),
        ops.AddIndex(
            model_name='Message',
            index=Index(fields=['conversation_id', 'change_seq']),
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0002_media_uploader_index')]

    initial = False

    operations = [
        ops.CreateModel(
            name='PushSubscription',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='push_subscriptions', on_delete=OnDelete.CASCADE)),
                ('session', fields.ForeignKeyField('models.AuthSession', source_field='session_id', db_constraint=True, to_field='id', related_name='push_subscriptions', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=8)),
                ('address', fields.TextField(unique=False)),
                ('address_hash', fields.CharField(unique=True, max_length=64)),
                ('p256dh', fields.CharField(default='', max_length=100)),
                ('auth', fields.CharField(default='', max_length=40)),
                ('environment', fields.CharField(default='', max_length=10)),
                ('badge', fields.IntField(default=0)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'push_subscriptions', 'app': 'models', 'indexes': [Index(fields=['user_id']), Index(fields=['session_id'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PushOutbox',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('subscription', fields.ForeignKeyField('models.PushSubscription', source_field='subscription_id', db_constraint=True, to_field='id', related_name='outbox', on_delete=OnDelete.CASCADE)),
                ('user_id', fields.UUIDField()),
                ('thread', fields.CharField(max_length=40)),
                ('kind', fields.CharField(default='message', max_length=8)),
                ('pending', fields.BooleanField(default=True)),
                ('payload', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('message_id', fields.BigIntField(default=0)),
                ('sent_message_id', fields.BigIntField(default=0)),
                ('count', fields.IntField(default=0)),
                ('rev', fields.IntField(default=0)),
                ('attempts', fields.IntField(default=0)),
                ('due_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('claimed_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'push_outbox', 'app': 'models', 'unique_together': (('subscription', 'thread'),), 'indexes': [Index(fields=['pending', 'due_at']), Index(fields=['user_id', 'thread'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PushCheckpoint',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=16)),
                ('message_id', fields.BigIntField(default=0)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'push_checkpoint', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='User',
            name='dnd_end',
            field=fields.CharField(null=True, max_length=5),
        ),
        ops.AddField(
            model_name='User',
            name='dnd_start',
            field=fields.CharField(null=True, max_length=5),
        ),
        ops.AddField(
            model_name='User',
            name='push_enabled',
            field=fields.BooleanField(default=True, db_default=True),
        ),
        ops.AddField(
            model_name='User',
            name='push_preview',
            field=fields.CharField(default='full', db_default='full', max_length=8),
        ),
        ops.AddField(
            model_name='User',
            name='timezone',
            field=fields.CharField(default='', db_default='', max_length=64),
        ),
    ]

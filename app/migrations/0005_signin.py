from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0004_message_search')]

    initial = False

    operations = [
        ops.CreateModel(
            name='OAuthFlow',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('state_hash', fields.CharField(unique=True, max_length=64)),
                ('binder_hash', fields.CharField(max_length=64)),
                ('provider', fields.CharField(max_length=64)),
                ('purpose', fields.CharField(max_length=8)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', null=True, db_constraint=True, to_field='id', related_name='oauth_flows', on_delete=OnDelete.CASCADE)),
                ('code_verifier', fields.CharField(max_length=128)),
                ('nonce', fields.CharField(max_length=64)),
                ('return_to', fields.CharField(default='/', max_length=512)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('handoff_hash', fields.CharField(null=True, unique=True, max_length=64)),
                ('handoff_user_id', fields.UUIDField(null=True)),
                ('handoff_expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('handoff_used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'oauth_flows', 'app': 'models', 'indexes': [Index(fields=['expires_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OAuthIdentity',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='identities', on_delete=OnDelete.CASCADE)),
                ('provider', fields.CharField(max_length=64)),
                ('subject', fields.CharField(max_length=255)),
                ('display_name', fields.CharField(default='', max_length=128)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('last_used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'oauth_identities', 'app': 'models', 'unique_together': (('provider', 'subject'),), 'indexes': [Index(fields=['user_id'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Conversation',
            name='avatar_key',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='User',
            name='avatar_key',
            field=fields.CharField(null=True, max_length=64),
        ),
    ]

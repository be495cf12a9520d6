from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0006_richer_messages')]

    initial = False

    operations = [
        ops.CreateModel(
            name='DataExport',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='exports', on_delete=OnDelete.CASCADE)),
                ('status', fields.CharField(default='pending', max_length=8)),
                ('storage_key', fields.CharField(null=True, max_length=512)),
                ('size', fields.BigIntField(null=True)),
                ('error', fields.CharField(default='', max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('claimed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('ready_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'data_exports', 'app': 'models', 'indexes': [Index(fields=['user_id', 'created_at']), Index(fields=['status', 'created_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='DataKeyRecord',
            fields=[
                ('kid', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=16)),
                ('check', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('retired_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'data_keys', 'app': 'models', 'pk_attr': 'kid'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='JobLock',
            fields=[
                ('name', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('holder', fields.CharField(max_length=64)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'job_locks', 'app': 'models', 'pk_attr': 'name'},
            bases=['Model'],
        ),
        # The plaintext columns stay, under new field names, until rotate-keys
        # has encrypted them: state first learns their column name, so the
        # rename below changes no column.
        ops.AlterField(
            model_name='User',
            name='email',
            field=fields.CharField(null=True, unique=True, max_length=254, source_field='email'),
        ),
        ops.AlterField(
            model_name='User',
            name='phone',
            field=fields.CharField(null=True, unique=True, max_length=20, source_field='phone'),
        ),
        ops.RenameField(
            model_name='User',
            old_name='email',
            new_name='legacy_email',
        ),
        ops.RenameField(
            model_name='User',
            old_name='phone',
            new_name='legacy_phone',
        ),
        ops.AddField(
            model_name='User',
            name='deactivated_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='User',
            name='email_bidx',
            field=fields.CharField(null=True, unique=True, max_length=96),
        ),
        ops.AddField(
            model_name='User',
            name='email_enc',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name='User',
            name='erase_after',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='User',
            name='erased_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='User',
            name='phone_bidx',
            field=fields.CharField(null=True, unique=True, max_length=96),
        ),
        ops.AddField(
            model_name='User',
            name='phone_enc',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddIndex(
            model_name='User',
            index=Index(fields=['erase_after']),
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0007_dataprot')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ServerSecret',
            fields=[
                ('name', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('value', fields.TextField(unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'server_secrets', 'app': 'models', 'pk_attr': 'name', 'table_description': 'A generated secret every process must agree on (`secret_key` when'},
            bases=['Model'],
        ),
    ]

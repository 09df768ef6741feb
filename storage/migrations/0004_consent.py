from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0003_conversation_log')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Consent',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='consents', on_delete=OnDelete.CASCADE)),
                ('topic', fields.CharField(max_length=20)),
                ('granted', fields.BooleanField()),
                ('source', fields.CharField(max_length=255)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'consent', 'app': 'models', 'unique_together': (('customer', 'topic'),), 'pk_attr': 'id', 'table_description': "A customer's latest word on one topic (service or marketing), with its source and time."},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Customer',
            name='locale',
            field=fields.CharField(null=True, max_length=35),
        ),
        ops.AddField(
            model_name='Customer',
            name='timezone',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Team',
            name='timezone',
            field=fields.CharField(null=True, max_length=64),
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0005_message_delivery_status')]

    initial = False

    operations = [
        ops.CreateModel(
            name='CustomerContact',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='contacts', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=10)),
                ('value', fields.CharField(max_length=255)),
                ('identity', fields.ForeignKeyField('models.Identity', source_field='identity_id', null=True, db_constraint=True, to_field='id', related_name='contacts', on_delete=OnDelete.SET_NULL)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'customer_contact', 'app': 'models', 'unique_together': (('kind', 'value'),), 'pk_attr': 'id', 'table_description': 'A verified contact point of a customer: a phone number (E.164) or an email address (lower case).'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Conversation',
            name='via_identity',
            field=fields.ForeignKeyField('models.Identity', source_field='via_identity_id', null=True, db_constraint=True, to_field='id', related_name='via_conversations', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddIndex(
            model_name='Conversation',
            index=Index(fields=['customer_id', 'state']),
        ),
        ops.AddField(
            model_name='Customer',
            name='bus_key',
            field=fields.CharField(null=True, max_length=255),
        ),
        ops.AddField(
            model_name='Customer',
            name='merged_into',
            field=fields.ForeignKeyField('models.Customer', source_field='merged_into_id', null=True, db_constraint=True, to_field='id', related_name='merged', on_delete=OnDelete.SET_NULL),
        ),
    ]

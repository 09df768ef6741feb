from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0002_keyed_scheduling')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ConversationLog',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('conversation', fields.ForeignKeyField('models.Conversation', source_field='conversation_id', db_constraint=True, to_field='id', related_name='log', on_delete=OnDelete.CASCADE)),
                ('what', fields.CharField(max_length=20)),
                ('from_state', fields.CharField(null=True, max_length=20)),
                ('to_state', fields.CharField(max_length=20)),
                ('team', fields.CharField(null=True, max_length=100)),
                ('agent_id', fields.CharField(null=True, max_length=255)),
                ('by', fields.CharField(null=True, max_length=255)),
                ('event_key', fields.CharField(db_index=True, max_length=255)),
                ('action_key', fields.CharField(unique=True, max_length=255)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'conversation_log', 'app': 'models', 'indexes': [Index(fields=['conversation_id', 'id'])], 'pk_attr': 'id', 'table_description': "One applied change of a conversation's state, team or owner (append-only)."},
            bases=['Model'],
        ),
    ]

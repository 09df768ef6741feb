from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from storage.models import ConversationState, Direction, OutboxStatus, OutboxTarget
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='BusJournalEntry',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key', fields.CharField(max_length=255)),
                ('payload', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'bus_journal', 'app': 'models', 'pk_attr': 'id', 'table_description': 'An event appended to the in-process bus, kept until it is acknowledged (replayed after a crash).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Customer',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('display_name', fields.CharField(default='', max_length=255)),
                ('attributes', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('tags', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'customer', 'app': 'models', 'pk_attr': 'id', 'table_description': 'One person, whatever channels they write from.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Identity',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='identities', on_delete=OnDelete.CASCADE)),
                ('channel', fields.CharField(max_length=50)),
                ('external_id', fields.CharField(max_length=255)),
                ('display_name', fields.CharField(null=True, max_length=255)),
                ('avatar_url', fields.CharField(null=True, max_length=1024)),
                ('reachable', fields.BooleanField(default=True)),
                ('unreachable_reason', fields.CharField(null=True, max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'identity', 'app': 'models', 'unique_together': (('channel', 'external_id'),), 'pk_attr': 'id', 'table_description': "A customer's account on one channel (a Telegram user id, a phone number, a web visitor id)."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='InboundReceipt',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('source', fields.CharField(max_length=50)),
                ('external_id', fields.CharField(max_length=255)),
                ('processed', fields.BooleanField(default=False)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'inbound_receipt', 'app': 'models', 'unique_together': (('source', 'external_id'),), 'pk_attr': 'id', 'table_description': 'One row per inbound platform event, keyed by (source, external id): how duplicates are dropped.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PluginState',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('plugin', fields.CharField(max_length=100)),
                ('scope', fields.CharField(max_length=100)),
                ('key', fields.CharField(max_length=255)),
                ('value', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'plugin_state', 'app': 'models', 'unique_together': (('plugin', 'scope', 'key'),), 'pk_attr': 'id', 'table_description': "A plugin's own key-value store, namespaced by plugin and scope (global, customer:N, conversation:N)."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Room',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='rooms', on_delete=OnDelete.CASCADE)),
                ('workspace', fields.CharField(max_length=50)),
                ('external_id', fields.CharField(max_length=255)),
                ('card_ref', fields.CharField(null=True, max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'room', 'app': 'models', 'unique_together': (('workspace', 'external_id'), ('workspace', 'customer')), 'pk_attr': 'id', 'table_description': "A customer's room in one workspace (a Matrix portal room, a Slack channel), reused across conversations."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Team',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=100)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'team', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A group of agents that conversations can be routed and transferred to.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Agent',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('workspace', fields.CharField(max_length=50)),
                ('external_id', fields.CharField(max_length=255)),
                ('display_name', fields.CharField(null=True, max_length=255)),
                ('team', fields.ForeignKeyField('models.Team', source_field='team_id', null=True, db_constraint=True, to_field='id', related_name='agents', on_delete=OnDelete.SET_NULL)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'agent', 'app': 'models', 'unique_together': (('workspace', 'external_id'),), 'pk_attr': 'id', 'table_description': 'A person on the team, as known in one workspace.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Conversation',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', db_constraint=True, to_field='id', related_name='conversations', on_delete=OnDelete.CASCADE)),
                ('identity', fields.ForeignKeyField('models.Identity', source_field='identity_id', db_constraint=True, to_field='id', related_name='conversations', on_delete=OnDelete.CASCADE)),
                ('room', fields.ForeignKeyField('models.Room', source_field='room_id', null=True, db_constraint=True, to_field='id', related_name='conversations', on_delete=OnDelete.SET_NULL)),
                ('state', fields.CharEnumField(default=ConversationState.BOT, description='BOT: bot\nQUEUED: queued\nASSIGNED: assigned\nCLOSED: closed', enum_type=ConversationState, max_length=20)),
                ('team', fields.ForeignKeyField('models.Team', source_field='team_id', null=True, db_constraint=True, to_field='id', related_name='conversations', on_delete=OnDelete.SET_NULL)),
                ('assignee', fields.ForeignKeyField('models.Agent', source_field='assignee_id', null=True, db_constraint=True, to_field='id', related_name='conversations', on_delete=OnDelete.SET_NULL)),
                ('tags', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('queued_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('assigned_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('closed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_customer_message_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'conversation', 'app': 'models', 'indexes': [Index(fields=['identity_id', 'state'])], 'pk_attr': 'id', 'table_description': "One support case: opened by a customer's first message, closed by an agent or a plugin."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Message',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('conversation', fields.ForeignKeyField('models.Conversation', source_field='conversation_id', db_constraint=True, to_field='id', related_name='messages', on_delete=OnDelete.CASCADE)),
                ('direction', fields.CharEnumField(description='INBOUND: inbound\nOUTBOUND: outbound\nNOTE: note', enum_type=Direction, max_length=10)),
                ('author', fields.CharField(default='', max_length=255)),
                ('text', fields.TextField(default='', unique=False)),
                ('attachments', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('channel', fields.CharField(max_length=50)),
                ('channel_message_id', fields.CharField(null=True, max_length=255)),
                ('workspace_message_id', fields.CharField(null=True, max_length=255)),
                ('edits', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('edited_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'message', 'app': 'models', 'indexes': [Index(fields=['channel', 'channel_message_id']), Index(fields=['workspace_message_id'])], 'pk_attr': 'id', 'table_description': 'A message in a conversation with its external id on each side and its edit history.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OutboxItem',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('idempotency_key', fields.CharField(unique=True, max_length=255)),
                ('target', fields.CharEnumField(description='CUSTOMER: customer\nROOM: room', enum_type=OutboxTarget, max_length=10)),
                ('adapter', fields.CharField(max_length=50)),
                ('address', fields.CharField(max_length=255)),
                ('conversation', fields.ForeignKeyField('models.Conversation', source_field='conversation_id', null=True, db_constraint=True, to_field='id', related_name='outbox', on_delete=OnDelete.CASCADE)),
                ('message', fields.ForeignKeyField('models.Message', source_field='message_id', null=True, db_constraint=True, to_field='id', related_name='outbox', on_delete=OnDelete.SET_NULL)),
                ('payload', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=OutboxStatus.PENDING, description='PENDING: pending\nSENDING: sending\nSENT: sent\nFAILED: failed', enum_type=OutboxStatus, max_length=10)),
                ('attempts', fields.IntField(default=0)),
                ('next_attempt_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('claimed_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('external_message_id', fields.CharField(null=True, max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'outbox_item', 'app': 'models', 'indexes': [Index(fields=['status', 'next_attempt_at']), Index(fields=['conversation_id', 'status'])], 'pk_attr': 'id', 'table_description': 'An outbound delivery, stored before it is sent and tracked until it is sent or given up.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ScheduledTask',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('plugin', fields.CharField(max_length=100)),
                ('job', fields.CharField(max_length=100)),
                ('conversation', fields.ForeignKeyField('models.Conversation', source_field='conversation_id', null=True, db_constraint=True, to_field='id', related_name='scheduled', on_delete=OnDelete.CASCADE)),
                ('data', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('due_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('fired_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'scheduled_task', 'app': 'models', 'indexes': [Index(fields=['fired_at', 'due_at'])], 'pk_attr': 'id', 'table_description': 'A job a plugin scheduled for later (``ctx.schedule``), fired once, even across workers.'},
            bases=['Model'],
        ),
    ]

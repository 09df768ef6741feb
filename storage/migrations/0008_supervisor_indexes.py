from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0007_conversation_satisfaction')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='Conversation',
            index=Index(fields=['created_at']),
        ),
        ops.AddIndex(
            model_name='Conversation',
            index=Index(fields=['state', 'queued_at']),
        ),
        ops.AddIndex(
            model_name='ConversationLog',
            index=Index(fields=['at']),
        ),
        ops.AddIndex(
            model_name='Message',
            index=Index(fields=['conversation_id', 'created_at']),
        ),
    ]

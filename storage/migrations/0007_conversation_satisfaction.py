from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0006_customers_across_channels')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Conversation',
            name='satisfaction',
            field=fields.SmallIntField(null=True),
        ),
        ops.AddField(
            model_name='Conversation',
            name='satisfaction_comment',
            field=fields.TextField(null=True, unique=False),
        ),
    ]

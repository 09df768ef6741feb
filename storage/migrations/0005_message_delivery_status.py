from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0004_consent')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Message',
            name='delivery_status',
            field=fields.CharField(default='', db_default='', max_length=10),
        ),
    ]

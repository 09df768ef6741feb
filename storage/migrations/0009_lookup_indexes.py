from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0008_supervisor_indexes')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='CustomerContact',
            index=Index(fields=['customer_id']),
        ),
        ops.AddIndex(
            model_name='Identity',
            index=Index(fields=['customer_id']),
        ),
        ops.AddIndex(
            model_name='PluginState',
            index=Index(fields=['scope']),
        ),
    ]

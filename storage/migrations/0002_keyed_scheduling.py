from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.migrations.constraints import UniqueConstraint

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='PeriodicRun',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('plugin', fields.CharField(max_length=100)),
                ('job', fields.CharField(max_length=100)),
                ('last_slot_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'periodic_run', 'app': 'models', 'unique_together': (('plugin', 'job'),), 'pk_attr': 'id', 'table_description': 'The last slot a periodic job (``@on_schedule(every=|cron=)``) fired for, shared by every worker.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='ScheduledTask',
            name='cancelled_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ScheduledTask',
            name='key',
            field=fields.CharField(null=True, max_length=255),
        ),
        ops.AddField(
            model_name='ScheduledTask',
            name='ran_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ScheduledTask',
            name='revision',
            field=fields.IntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='ScheduledTask',
            name='scope',
            field=fields.CharField(default='global', db_default='global', max_length=100),
        ),
        ops.AddField(
            model_name='ScheduledTask',
            name='source',
            field=fields.CharField(null=True, max_length=255),
        ),
        ops.AddConstraint(
            model_name='ScheduledTask',
            constraint=UniqueConstraint(fields=('plugin', 'scope', 'key'), name=None),
        ),
    ]

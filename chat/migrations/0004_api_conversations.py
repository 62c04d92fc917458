from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0003_flags_and_model_choice"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="parameters",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name="conversation",
            name="kind",
            field=models.CharField(
                choices=[("chat", "Chat"), ("playground", "Playground"), ("api", "Api")], default="chat", max_length=16
            ),
        ),
    ]

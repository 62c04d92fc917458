from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0002_conversation_kind_conversation_prompt_variables_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="model_name",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="message",
            name="flagged_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]

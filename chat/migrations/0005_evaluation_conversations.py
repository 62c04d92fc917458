from django.db import migrations, models


class Migration(migrations.Migration):
    """Conversations of kind `evaluation`: an evaluation's cases, answered by the model workers."""

    dependencies = [("chat", "0004_api_conversations")]

    operations = [
        migrations.AlterField(
            model_name="conversation",
            name="kind",
            field=models.CharField(
                choices=[("chat", "Chat"), ("playground", "Playground"), ("api", "Api"), ("evaluation", "Evaluation")],
                default="chat",
                max_length=16,
            ),
        ),
    ]

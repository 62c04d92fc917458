# A failed reply's code out_of_memory (was model_failed, read from the error's words): the
# choices change, the column and the stored codes do not.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0014_output_format_failed_code"),
    ]

    operations = [
        migrations.AlterField(
            model_name="message",
            name="error_code",
            field=models.CharField(
                blank=True,
                choices=[
                    ("no_worker", "No Worker"),
                    ("busy", "Busy"),
                    ("load_failed", "Load Failed"),
                    ("worker_lost", "Worker Lost"),
                    ("model_failed", "Model Failed"),
                    ("output_format_failed", "Output Format Failed"),
                    ("out_of_memory", "Out Of Memory"),
                ],
                max_length=32,
            ),
        ),
    ]

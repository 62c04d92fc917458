"""A document's failure gets a code beside its sentence (`error_code`; blank for failures stored
before it), and a failed document no longer keeps its file: the files of the documents that had
already failed are deleted here (their rows and reasons stay; uploading the same file again tries it
again). The ingestion jobs get the indexes the job workers' fair pick reads (selectors.next_ingestion)."""

from pathlib import Path

from django.conf import settings
from django.db import migrations, models


def delete_files_of_failed_documents(apps, schema_editor):
    Document = apps.get_model("knowledge", "Document")
    failed = Document.objects.filter(status="failed").exclude(file="")
    for path in failed.values_list("file", flat=True).iterator():
        (Path(settings.KNOWLEDGE_FILES_DIR) / path).unlink(missing_ok=True)
    failed.update(file="")


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0004_keyword_column"),
    ]

    operations = [
        migrations.AddField(
            model_name="document",
            name="error_code",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AddIndex(
            model_name="ingestionjob",
            index=models.Index(fields=["status"], name="knowledge_ingestion_status"),
        ),
        migrations.AddIndex(
            model_name="ingestionjob",
            index=models.Index(fields=["started_at"], name="knowledge_ingestion_started"),
        ),
        migrations.RunPython(delete_files_of_failed_documents, migrations.RunPython.noop),
    ]

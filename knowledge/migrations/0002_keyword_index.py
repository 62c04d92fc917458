"""The keyword index of knowledge search (knowledge/keyword_index.py): an FTS5 table kept by
triggers on SQLite, a GIN expression index on PostgreSQL. Django's models describe neither, so the
state is unchanged."""

from django.db import migrations


def install(apps, schema_editor):
    from knowledge import keyword_index

    keyword_index.install(schema_editor.connection)


def uninstall(apps, schema_editor):
    from knowledge import keyword_index

    keyword_index.uninstall(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
    ]

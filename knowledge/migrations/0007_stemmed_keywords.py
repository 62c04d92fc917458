"""The keyword index stems words and holds each chunk's heading trail beside its text
(knowledge/keyword_index.py): SQLite's FTS5 table is made again with the porter tokenizer and a
heading column, PostgreSQL's generated column again with the `english` configuration; both are
filled from the chunks already stored, so every base (not only new and rebuilt ones) gets it. No
chunk, vector or setting changes."""

from django.db import migrations


def reinstall(apps, schema_editor):
    from knowledge import keyword_index

    keyword_index.uninstall(schema_editor.connection)
    keyword_index.install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0006_ranking_settings"),
    ]

    operations = [
        migrations.RunPython(reinstall, migrations.RunPython.noop, elidable=False),
    ]

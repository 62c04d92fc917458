"""PostgreSQL: the keyword index becomes a stored generated column, knowledge_chunk.text_search =
to_tsvector('simple', text), with a GIN index, in place of the GIN expression index of 0002 (ranking
and any filter outside the index parsed each chunk's text again). Filled from the stored text as the
column is added. Nothing changes on SQLite. Django's models do not describe the column (inserts
leave it to the database), so the state is unchanged."""

from django.db import migrations


def install(apps, schema_editor):
    from knowledge import keyword_index

    if schema_editor.connection.vendor == "postgresql":
        keyword_index.install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0003_generations"),
    ]

    operations = [
        migrations.RunPython(install, migrations.RunPython.noop, elidable=False),
    ]

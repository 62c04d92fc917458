"""The full-text index of chat search (chat/search_index.py): FTS5 tables kept by triggers on
SQLite, filled from the messages and titles stored before; GIN indexes on PostgreSQL. Django's
models do not describe either, so the state is unchanged."""

from django.db import migrations


def install(apps, schema_editor):
    from chat import search_index

    search_index.install(schema_editor.connection)


def uninstall(apps, schema_editor):
    from chat import search_index

    search_index.uninstall(schema_editor.connection)


class Migration(migrations.Migration):
    # PostgreSQL builds its indexes CONCURRENTLY, which cannot run in a transaction; the SQLite
    # part opens its own (chat.search_index.install).
    atomic = False

    dependencies = [
        ("chat", "0009_branches_and_chat_settings"),
    ]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
    ]

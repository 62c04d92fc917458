"""The SQLite part of a full-text index kept by triggers (FTS5 tables with external content):
chat search (chat/search_index.py) and knowledge keyword search (knowledge/index.py) each
describe theirs as an `Fts5Index` and share how it is created, dropped and repaired.

Repair is needed because Django rebuilds a SQLite table for some schema changes (copy, drop,
rename): the copy has no triggers, so after every `migrate` the missing ones are put back and the
index refilled, since it missed whatever changed meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connections, transaction


@dataclass(frozen=True)
class Fts5Index:
    content_table: str  # the Django table whose rows are indexed
    tables: dict[str, str]  # FTS5 table name → its CREATE VIRTUAL TABLE statement
    triggers: dict[str, str]  # trigger name → its CREATE TRIGGER statement
    fill: tuple[str, ...]  # statements that empty the FTS5 tables and index every row from scratch

    def install(self, connection) -> None:
        """Create the tables and triggers and index the rows stored so far, in one transaction."""
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            for statement in (*self.tables.values(), *self.triggers.values(), *self.fill):
                cursor.execute(statement)

    def uninstall(self, connection) -> None:
        with connection.cursor() as cursor:
            for name in self.triggers:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
            for name in self.tables:
                cursor.execute(f"DROP TABLE IF EXISTS {name}")

    def repair(self, using: str) -> None:
        """Put back triggers a table rebuild dropped, and refill. One query when nothing is missing;
        nothing before the migration that installs the index (or after it was reversed)."""
        connection = connections[using]
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")
            present = {row[0] for row in cursor.fetchall()}
            if self.content_table not in present or not set(self.tables) <= present or set(self.triggers) <= present:
                return
            with transaction.atomic(using=using):
                for statement in (*self.triggers.values(), *self.fill):
                    cursor.execute(statement)

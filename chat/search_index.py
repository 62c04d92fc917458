"""The full-text index behind chat search, one per database backend, and the SQL that reads it.

SQLite (embedded mode): two FTS5 tables with external content, so the text is stored once, in
`chat_message` and `chat_conversation`; the index holds only tokens (`unicode61 remove_diacritics
2`: "Lisboa" finds "lisbóa").

- `chat_message_fts(content)`, rowid = chat_message.id. Only finished messages are in it: a
  reply's text is rewritten every LLM_FLUSH_MS while it streams, and re-indexing a growing text at
  every flush would cost each write a delete and an insert in the index. The triggers fire only
  when a row enters, leaves or changes while in a finished status (their WHEN clauses), so a
  streaming flush runs no trigger at all and a reply is indexed once, when it ends.
- `chat_conversation_fts(title)`, rowid = chat_conversation.id, kept by triggers on the title.

An external-content index must be told the exact text it indexed to delete it, which the triggers
do (`old.content` of a row that was finished). Each trigger touches only its own table and its
FTS table: Django remakes a SQLite table (copy, drop, rename) for some schema changes, which drops
that table's triggers, and a trigger naming another table would break the rename.
`ensure_installed` (after every `migrate`) puts missing triggers back and rebuilds the index.

PostgreSQL (scaled mode): GIN expression indexes on `to_tsvector('simple', ...)` (the message one
partial, finished messages only, for the reason above), read with `phraseto_tsquery` and
`ts_headline` (whose parser takes `<b>`-like tags in the text for markup and leaves them out
of snippets; everything else is escaped as on SQLite). 'simple' keeps every word (no stemming
or stop words; accents are kept, unlike SQLite's tokenizer: PostgreSQL's `unaccent` is an
extension and not immutable).

A search is given as phrases (chat.search.SearchTerms), never as the person's raw text: nothing
they type is read as FTS syntax on either database.
"""

from __future__ import annotations

from django.db import connections

from studio.sqlite_fts import Fts5Index

IN_PROGRESS = ("queued", "streaming")  # chat.models.Message.IN_PROGRESS, spelt out for SQL
_FINISHED = "status NOT IN ('queued', 'streaming')"
# Where a match starts and ends in snippets: private-use characters, turned into <mark> after
# the text is HTML-escaped (chat.search.marked_html).
MARK_START, MARK_END = "\ue000", "\ue001"
SNIPPET_TOKENS = 24  # words around a match in a message's snippet

_SQLITE_TRIGGERS = {
    "chat_message_fts_insert": f"""
        CREATE TRIGGER IF NOT EXISTS chat_message_fts_insert AFTER INSERT ON chat_message
        WHEN new.{_FINISHED}
        BEGIN
            INSERT INTO chat_message_fts(rowid, content) VALUES (new.id, new.content);
        END""",
    "chat_message_fts_delete": f"""
        CREATE TRIGGER IF NOT EXISTS chat_message_fts_delete AFTER DELETE ON chat_message
        WHEN old.{_FINISHED}
        BEGIN
            INSERT INTO chat_message_fts(chat_message_fts, rowid, content) VALUES ('delete', old.id, old.content);
        END""",
    # A streaming flush (status stays in progress) matches neither side of the WHEN: no work.
    "chat_message_fts_update": f"""
        CREATE TRIGGER IF NOT EXISTS chat_message_fts_update AFTER UPDATE OF content, status ON chat_message
        WHEN (old.{_FINISHED} OR new.{_FINISHED})
             AND (old.content IS NOT new.content OR (old.{_FINISHED}) IS NOT (new.{_FINISHED}))
        BEGIN
            INSERT INTO chat_message_fts(chat_message_fts, rowid, content)
                SELECT 'delete', old.id, old.content WHERE old.{_FINISHED};
            INSERT INTO chat_message_fts(rowid, content) SELECT new.id, new.content WHERE new.{_FINISHED};
        END""",
    "chat_conversation_fts_insert": """
        CREATE TRIGGER IF NOT EXISTS chat_conversation_fts_insert AFTER INSERT ON chat_conversation
        BEGIN
            INSERT INTO chat_conversation_fts(rowid, title) VALUES (new.id, new.title);
        END""",
    "chat_conversation_fts_delete": """
        CREATE TRIGGER IF NOT EXISTS chat_conversation_fts_delete AFTER DELETE ON chat_conversation
        BEGIN
            INSERT INTO chat_conversation_fts(chat_conversation_fts, rowid, title) VALUES ('delete', old.id, old.title);
        END""",
    "chat_conversation_fts_update": """
        CREATE TRIGGER IF NOT EXISTS chat_conversation_fts_update AFTER UPDATE OF title ON chat_conversation
        WHEN old.title IS NOT new.title
        BEGIN
            INSERT INTO chat_conversation_fts(chat_conversation_fts, rowid, title) VALUES ('delete', old.id, old.title);
            INSERT INTO chat_conversation_fts(rowid, title) VALUES (new.id, new.title);
        END""",
}
_SQLITE_TOKENIZER = "unicode61 remove_diacritics 2"
_SQLITE_TABLES = {
    "chat_message_fts": f"""CREATE VIRTUAL TABLE IF NOT EXISTS chat_message_fts USING fts5(
            content, content='chat_message', content_rowid='id', tokenize='{_SQLITE_TOKENIZER}')""",
    "chat_conversation_fts": f"""CREATE VIRTUAL TABLE IF NOT EXISTS chat_conversation_fts USING fts5(
            title, content='chat_conversation', content_rowid='id', tokenize='{_SQLITE_TOKENIZER}')""",
}
# What the tables hold, from scratch: finished messages and every title.
_SQLITE_FILL = (
    "INSERT INTO chat_message_fts(chat_message_fts) VALUES ('delete-all')",
    f"INSERT INTO chat_message_fts(rowid, content) SELECT id, content FROM chat_message WHERE {_FINISHED}",
    "INSERT INTO chat_conversation_fts(chat_conversation_fts) VALUES ('delete-all')",
    "INSERT INTO chat_conversation_fts(rowid, title) SELECT id, title FROM chat_conversation",
)
_SQLITE_INDEX = Fts5Index(
    content_table="chat_message", tables=_SQLITE_TABLES, triggers=_SQLITE_TRIGGERS, fill=_SQLITE_FILL
)

_POSTGRESQL_INDEXES = {
    "chat_message_content_search": f"ON chat_message USING gin (to_tsvector('simple'::regconfig, content)) "
    f"WHERE {_FINISHED}",
    "chat_conversation_title_search": "ON chat_conversation USING gin (to_tsvector('simple'::regconfig, title))",
}


def install(connection) -> None:
    """Create the index and fill it from the rows stored so far (migration chat/0010)."""
    if connection.vendor == "sqlite":
        _SQLITE_INDEX.install(connection)
    elif connection.vendor == "postgresql":
        # CONCURRENTLY: writes to chat_message go on while a large table is indexed (the
        # migration is not atomic for this); an index a failed attempt left invalid goes first.
        with connection.cursor() as cursor:
            for name, definition in _POSTGRESQL_INDEXES.items():
                cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                cursor.execute(f"CREATE INDEX CONCURRENTLY {name} {definition}")


def uninstall(connection) -> None:
    if connection.vendor == "sqlite":
        _SQLITE_INDEX.uninstall(connection)
    elif connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for name in _POSTGRESQL_INDEXES:
                cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def ensure_installed(*, using: str = "default", **kwargs) -> None:
    """After `migrate` (post_migrate): on SQLite, put back the triggers a table rebuild dropped and
    refill the index (studio/sqlite_fts.py)."""
    if connections[using].vendor == "sqlite":
        _SQLITE_INDEX.repair(using)


def _fts5_query(phrases: tuple[str, ...], prefix: bool) -> str:
    """FTS5 MATCH text: each phrase a double-quoted string (so `"`, `*`, `NEAR(`, `-`, `:`, `(`,
    `OR` are only text), all required; the last one a prefix when `prefix`."""
    quoted = ['"' + phrase.replace('"', '""') + '"' for phrase in phrases]
    if prefix:
        quoted[-1] += "*"
    return " ".join(quoted)


def _tsquery_sql(phrases: tuple[str, ...], prefix: bool) -> tuple[str, list]:
    """A tsquery expression: each phrase through phraseto_tsquery (no operators are read from it),
    AND-ed; the last one a prefix (one word, quoted as a tsquery literal) when `prefix`."""
    parts, params = [], []
    for number, phrase in enumerate(phrases):
        if prefix and number == len(phrases) - 1:
            parts.append("to_tsquery('simple'::regconfig, %s)")
            params.append("'" + phrase.replace("\\", "\\\\").replace("'", "''") + "':*")
        else:
            parts.append("phraseto_tsquery('simple'::regconfig, %s)")
            params.append(phrase)
    return "(" + " && ".join(parts) + ")", params


def matching_conversation_ids(vendor: str, phrases: tuple[str, ...], prefix: bool) -> tuple[str, list]:
    """SQL (and its parameters) selecting the ids of conversations with a finished message that
    contains every phrase. On SQLite the index drives the join: written as `message.id IN (SELECT
    rowid ...)`, SQLite without statistics (Django runs no ANALYZE) re-read the index for each of
    the person's conversations, 100 s for a common word over 50,000 messages (28 ms this way)."""
    if vendor == "sqlite":
        return (
            "SELECT m.conversation_id FROM chat_message_fts JOIN chat_message m ON m.id = chat_message_fts.rowid "
            "WHERE chat_message_fts MATCH %s",
            [_fts5_query(phrases, prefix)],
        )
    tsquery, params = _tsquery_sql(phrases, prefix)
    return (
        f"SELECT conversation_id FROM chat_message WHERE {_FINISHED} "
        f"AND to_tsvector('simple'::regconfig, content) @@ {tsquery}",
        params,
    )


def last_matches(connection, *, conversation_ids: list[int], phrases: tuple[str, ...], prefix: bool) -> dict[int, int]:
    """conversation id -> the id of its newest finished message that contains every phrase."""
    if not conversation_ids:
        return {}
    ids = ", ".join(["%s"] * len(conversation_ids))
    if connection.vendor == "sqlite":
        sql = (
            "SELECT m.conversation_id, MAX(m.id) FROM chat_message_fts JOIN chat_message m "
            f"ON m.id = chat_message_fts.rowid WHERE chat_message_fts MATCH %s AND m.conversation_id IN ({ids}) "
            "GROUP BY m.conversation_id"
        )
        params = [_fts5_query(phrases, prefix), *conversation_ids]
    else:
        tsquery, params = _tsquery_sql(phrases, prefix)
        sql = (
            f"SELECT conversation_id, MAX(id) FROM chat_message WHERE {_FINISHED} "
            f"AND to_tsvector('simple'::regconfig, content) @@ {tsquery} AND conversation_id IN ({ids}) "
            "GROUP BY conversation_id"
        )
        params = [*params, *conversation_ids]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return dict(cursor.fetchall())


def matching_title_ids(vendor: str, phrases: tuple[str, ...], prefix: bool) -> tuple[str, list]:
    """SQL (and its parameters) selecting the ids of conversations whose title contains every phrase."""
    if vendor == "sqlite":
        return (
            "SELECT rowid FROM chat_conversation_fts WHERE chat_conversation_fts MATCH %s",
            [_fts5_query(phrases, prefix)],
        )
    tsquery, params = _tsquery_sql(phrases, prefix)
    return f"SELECT id FROM chat_conversation WHERE to_tsvector('simple'::regconfig, title) @@ {tsquery}", params


def _rowid_in(prefix: bool) -> str:
    """How an FTS5 query is narrowed to some rows: by a seek per row, except for a prefix query,
    whose every seek merges all the words with that prefix again (180 ms for 50 rows of 50,000
    messages; `+rowid` makes it one pass over the matches and a filter: 27 ms)."""
    return "+rowid" if prefix else "rowid"


def snippets(connection, *, message_ids: list[int], phrases: tuple[str, ...], prefix: bool) -> dict[int, str]:
    """message id -> a passage around its matches, matches between MARK_START and MARK_END (the
    text is the stored text: escape it before showing it)."""
    if not message_ids:
        return {}
    ids = ", ".join(["%s"] * len(message_ids))
    if connection.vendor == "sqlite":
        sql = (
            f"SELECT rowid, snippet(chat_message_fts, 0, %s, %s, '…', {SNIPPET_TOKENS}) FROM chat_message_fts "
            f"WHERE chat_message_fts MATCH %s AND {_rowid_in(prefix)} IN ({ids})"
        )
        params = [MARK_START, MARK_END, _fts5_query(phrases, prefix), *message_ids]
    else:
        tsquery, params = _tsquery_sql(phrases, prefix)
        sql = (
            f"SELECT id, ts_headline('simple'::regconfig, content, {tsquery}, %s) FROM chat_message WHERE id IN ({ids})"
        )
        options = (
            f'StartSel="{MARK_START}", StopSel="{MARK_END}", MaxWords={SNIPPET_TOKENS}, MinWords=8, '
            'ShortWord=0, MaxFragments=2, FragmentDelimiter=" … "'
        )
        params = [*params, options, *message_ids]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return dict(cursor.fetchall())


def highlighted_titles(
    connection, *, conversation_ids: list[int], phrases: tuple[str, ...], prefix: bool
) -> dict[int, str]:
    """conversation id -> its whole title with the matches marked (only titles that match)."""
    if not conversation_ids:
        return {}
    ids = ", ".join(["%s"] * len(conversation_ids))
    if connection.vendor == "sqlite":
        sql = (
            f"SELECT rowid, highlight(chat_conversation_fts, 0, %s, %s) FROM chat_conversation_fts "
            f"WHERE chat_conversation_fts MATCH %s AND {_rowid_in(prefix)} IN ({ids})"
        )
        params = [MARK_START, MARK_END, _fts5_query(phrases, prefix), *conversation_ids]
    else:
        tsquery, params = _tsquery_sql(phrases, prefix)
        sql = (
            f"SELECT id, ts_headline('simple'::regconfig, title, {tsquery}, %s) FROM chat_conversation "
            f"WHERE id IN ({ids}) AND to_tsvector('simple'::regconfig, title) @@ {tsquery}"
        )
        params = [
            *params,
            f'StartSel="{MARK_START}", StopSel="{MARK_END}", HighlightAll=true',
            *conversation_ids,
            *params,
        ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return dict(cursor.fetchall())

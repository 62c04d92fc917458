"""The keyword index behind knowledge search (BM25), per database backend, and its reads.

- SQLite (embedded mode): an FTS5 table with external content, `knowledge_chunk_fts(heading, text)`,
  rowid = knowledge_chunk.id, so the text is stored once, in knowledge_chunk. Words are stemmed
  (FTS5's porter tokenizer: "trained" finds "training") and a chunk's heading trail (its document's
  title and the headings above it) is indexed beside its text, weighted less (HEADING_WEIGHT). Kept by triggers on that
  table (insert, delete, a change of text), not by the ingestion service: Django deletes chunks
  from several paths (a document or a whole knowledge base deleted, a document ingested again),
  and a trigger sees every one of them. As in chat/search_index.py, each trigger touches only its
  table and its FTS table, and `ensure_installed` (after every `migrate`) puts back triggers that a
  table rebuild dropped. Scored with FTS5's `bm25()` (negated: higher is better). Its statistics
  (document frequencies, average length) are those of every knowledge base together; the ranking
  within one base is what search uses, and it is filtered to that base.
- PostgreSQL (scaled mode): a stored generated column `text_search`, the text's words (weight A)
  and its heading trail's (weight B) in the `english` configuration (stemmed, stop words left
  out), with a GIN index (the text is parsed once, when written), scored with `ts_rank_cd` (cover
  density: term frequency and proximity, no inverse document frequency, so not BM25; hybrid search
  fuses ranks, not scores, so the two backends rank alike). The query is parsed with the same
  configuration.
A query reaches either index as its words (nothing a person types is read as FTS syntax): the
chunks holding every word first, any word when fewer than the candidates wanted hold every word;
on PostgreSQL the chunks ranked are bounded (KEYWORD_POOL).
Every read is of the knowledge base's active generation of chunks (models.KnowledgeBase).
"""

from __future__ import annotations

import re

from django.db import connection, connections

from studio.sqlite_fts import Fts5Index

MAX_QUERY_TERMS = 32

_SQLITE_TRIGGERS = {
    "knowledge_chunk_fts_insert": """
        CREATE TRIGGER IF NOT EXISTS knowledge_chunk_fts_insert AFTER INSERT ON knowledge_chunk
        BEGIN
            INSERT INTO knowledge_chunk_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text);
        END""",
    "knowledge_chunk_fts_delete": """
        CREATE TRIGGER IF NOT EXISTS knowledge_chunk_fts_delete AFTER DELETE ON knowledge_chunk
        BEGIN
            INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts, rowid, heading, text)
            VALUES ('delete', old.id, old.heading, old.text);
        END""",
    "knowledge_chunk_fts_update": """
        CREATE TRIGGER IF NOT EXISTS knowledge_chunk_fts_update AFTER UPDATE OF heading, text ON knowledge_chunk
        WHEN old.text IS NOT new.text OR old.heading IS NOT new.heading
        BEGIN
            INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts, rowid, heading, text)
            VALUES ('delete', old.id, old.heading, old.text);
            INSERT INTO knowledge_chunk_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text);
        END""",
}
_SQLITE_FILL = (
    "INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts) VALUES ('delete-all')",
    "INSERT INTO knowledge_chunk_fts(rowid, heading, text) SELECT id, heading, text FROM knowledge_chunk",
)
# The tokenizer and columns; knowledge/memory_index.py builds its in-memory twin from the same words.
SQLITE_FTS_COLUMNS = "heading, text"
SQLITE_FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"
HEADING_WEIGHT = 0.5  # a heading's word counts half a word of the text (bm25's column weights)
_SQLITE_INDEX = Fts5Index(
    content_table="knowledge_chunk",
    tables={
        "knowledge_chunk_fts": f"""CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_chunk_fts USING fts5(
        {SQLITE_FTS_COLUMNS}, content='knowledge_chunk', content_rowid='id', tokenize='{SQLITE_FTS_TOKENIZE}')"""
    },
    triggers=_SQLITE_TRIGGERS,
    fill=_SQLITE_FILL,
)
# PostgreSQL: the words of each chunk parsed once, when it is written, into a stored generated
# column, and a GIN index on it. (It began as an expression index on to_tsvector(text): every
# candidate ranked, and every row a plan filtered outside the index, parsed its text again, about
# 0.1 ms a chunk.)
# (0008 made it stemmed, with the heading: the column is dropped and added again.)
POSTGRESQL_CONFIGURATION = "english"
_POSTGRESQL_COLUMN = (
    "text_search",
    "tsvector GENERATED ALWAYS AS (setweight(to_tsvector('english'::regconfig, text), 'A') || "
    "setweight(to_tsvector('english'::regconfig, heading), 'B')) STORED",
)
_POSTGRESQL_INDEX = ("knowledge_chunk_text_search", "ON knowledge_chunk USING gin (text_search)")


def install(connection) -> None:
    """Create the keyword index and fill it from the chunks stored so far (migrations knowledge/0002,
    and 0004 on PostgreSQL: the column replaces the expression index there)."""
    if connection.vendor == "sqlite":
        _SQLITE_INDEX.install(connection)
    elif connection.vendor == "postgresql":
        (column, column_type), (name, definition) = _POSTGRESQL_COLUMN, _POSTGRESQL_INDEX
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE knowledge_chunk ADD COLUMN IF NOT EXISTS {column} {column_type}")
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
            row = cursor.fetchone()
            if row and "to_tsvector" in row[0]:  # the expression index of before
                cursor.execute(f"DROP INDEX {name}")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {name} {definition}")


def uninstall(connection) -> None:
    if connection.vendor == "sqlite":
        _SQLITE_INDEX.uninstall(connection)
    elif connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {_POSTGRESQL_INDEX[0]}")
            cursor.execute(f"ALTER TABLE knowledge_chunk DROP COLUMN IF EXISTS {_POSTGRESQL_COLUMN[0]}")


def ensure_installed(*, using: str = "default", **kwargs) -> None:
    """After `migrate` (post_migrate), on SQLite: put back triggers a table rebuild dropped and refill
    the index (studio/sqlite_fts.py). (PostgreSQL's column is generated: nothing to repair.)"""
    if connections[using].vendor == "sqlite":
        _SQLITE_INDEX.repair(using)


# --- Keyword candidates ---------------------------------------------------------------------------

# Chunks ranked at most for one query, PostgreSQL. Ranking every chunk that held a query's common
# word grew with the base (1.2 s at 10,000 chunks, 12 s at 100,000, `make bench`); the pool bounds
# that work at any size (see keyword_candidates).
KEYWORD_POOL = 1000


def query_terms(query: str) -> list[str]:
    """The words of a query, lower-cased, each once, at most MAX_QUERY_TERMS."""
    return list(dict.fromkeys(re.findall(r"\w+", query.lower())))[:MAX_QUERY_TERMS]


def keyword_candidates(*, knowledge_base_id: int, query: str, limit: int) -> list[tuple[int, float]]:
    """[(chunk id, keyword score)], best first, of the ready documents of one knowledge base (its
    active generation of chunks).

    Chunks holding every word of the query come first: when at least `limit` do, they are the
    candidates; otherwise a chunk matches when it holds any word. Each database cuts the query into
    words with the tokenizer that cut the text (PostgreSQL's parser reads "ZX-4411" as 'zx' and
    '-4411', SQLite's as "zx" and "4411"). On PostgreSQL at most KEYWORD_POOL matching chunks are
    ranked: with every word the first ones the index gives, with any word an equal share per word,
    so a rare word's few chunks are all ranked beside a common word's first ones."""
    if connection.vendor == "sqlite":
        return _sqlite_keywords(knowledge_base_id, query, limit)
    return _postgresql_keywords(knowledge_base_id, query, limit)


_SQLITE_KEYWORDS = (
    f"SELECT c.id, -bm25(knowledge_chunk_fts, {HEADING_WEIGHT}, 1.0) AS score FROM knowledge_chunk_fts "
    "JOIN knowledge_chunk c ON c.id = knowledge_chunk_fts.rowid "
    "JOIN knowledge_document d ON d.id = c.document_id "
    "JOIN knowledge_knowledgebase kb ON kb.id = c.knowledge_base_id "
    "WHERE knowledge_chunk_fts MATCH %s AND c.knowledge_base_id = %s AND c.generation = kb.active_generation "
    "AND d.status = 'ready' ORDER BY score DESC, c.id LIMIT %s"
)


def _sqlite_keywords(knowledge_base_id: int, query: str, limit: int) -> list[tuple[int, float]]:
    terms = ['"' + term.replace('"', '""') + '"' for term in query_terms(query)]
    if not terms:
        return []
    # FTS5 scores every chunk that matches: holding every word is the narrower question, asked first.
    found = _fetch(_SQLITE_KEYWORDS, [" ".join(terms), knowledge_base_id, limit]) if len(terms) > 1 else []
    if len(found) < limit:
        found = _fetch(_SQLITE_KEYWORDS, [" OR ".join(terms), knowledge_base_id, limit])
    return found


# Candidates of the ready documents of one base, in its active generation.
_POSTGRESQL_SEARCHED = (
    "knowledge_chunk c JOIN knowledge_document d ON d.id = c.document_id "
    "JOIN knowledge_knowledgebase kb ON kb.id = c.knowledge_base_id "
    "WHERE c.knowledge_base_id = %(knowledge_base)s AND c.generation = kb.active_generation "
    "AND d.status = 'ready'"
)
_POSTGRESQL_RANKED = """SELECT c.id, ts_rank_cd(c.text_search, %(any_word)s::tsquery) AS score
    FROM pool JOIN knowledge_chunk c ON c.id = pool.id
    ORDER BY score DESC, c.id LIMIT %(limit)s"""
_POSTGRESQL_EVERY_WORD = f"""WITH pool AS (SELECT c.id FROM {_POSTGRESQL_SEARCHED}
    AND c.text_search @@ %(every_word)s::tsquery LIMIT %(pool)s)
{_POSTGRESQL_RANKED}"""


def _postgresql_keywords(knowledge_base_id: int, query: str, limit: int) -> list[tuple[int, float]]:
    # The query's words as PostgreSQL's parser cuts them; each one a quoted tsquery word, so nothing
    # is read as tsquery syntax. They reach the SQL as constants (Django's psycopg binds on the
    # client), so the planner weighs each word by its frequency: a rare word's chunks through the
    # GIN index, a common word's first ones from wherever they come cheapest.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT lexeme FROM unnest(to_tsvector('{POSTGRESQL_CONFIGURATION}'::regconfig, %s)) "
            f"LIMIT {MAX_QUERY_TERMS}",
            [query],
        )
        words = ["'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'" for (lexeme,) in cursor.fetchall()]
    if not words:
        return []
    params = {
        "knowledge_base": knowledge_base_id,
        "limit": limit,
        "pool": KEYWORD_POOL,
        "every_word": " & ".join(words),
        "any_word": " | ".join(words),
    }
    found = _fetch(_POSTGRESQL_EVERY_WORD, params) if len(words) > 1 else []
    if len(found) < limit:
        # An equal share of the pool per word: a rare word's few chunks are all ranked beside a
        # common word's first ones.
        share = max(limit, KEYWORD_POOL // len(words))
        pools = " UNION ".join(
            f"(SELECT c.id FROM {_POSTGRESQL_SEARCHED} AND c.text_search @@ %(word{n})s::tsquery LIMIT {share})"
            for n in range(len(words))
        )
        found = _fetch(
            f"WITH pool AS ({pools})\n{_POSTGRESQL_RANKED}",
            {**params, **{f"word{n}": word for n, word in enumerate(words)}},
        )
    return found


def _fetch(sql: str, params) -> list[tuple[int, float]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(chunk_id, float(score)) for chunk_id, score in cursor.fetchall()]

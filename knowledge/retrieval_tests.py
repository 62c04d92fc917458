"""Retrieval test sets: questions a team asks of a knowledge base, each with its right passages,
and how well the base's search finds them (recall@1/5/10, MRR@10, per question the rank of the
first right passage), measured with the base's current index and ranking settings.

A test is imported (JSONL or CSV, or the API's list of questions) or built from failure cases whose
passages a person judged (evals/retrieval_tests.py, registered here: knowledge may not import
evals). Its last measurement is stored with what it measured (`version_of`): when the base changes
(a rebuild switched over, a document added, a ranking setting changed) the figures are stale, and
the next look measures again: in the request for a test of at most MEASURE_IN_REQUEST questions,
else by a job on the knowledge lane (`RetrievalMeasurement`) whose progress the page shows. A
rebuild's switch-over queues a measurement of every test of its base (services.rebuild_switch_if_built).

Every bound is checked before any work (the file's size, the number of questions, then each
line), and a test is stored whole or not at all.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from studio import jobs
from studio.errors import Forbidden, StudioError
from studio.input_checks import InputError, parse_json, unstorable_reason
from studio.jobs import JobStatus

from .models import Chunk, Document, KnowledgeBase, RetrievalMeasurement, RetrievalQuestion, RetrievalTest
from .retrieval import PASSAGE_CHARS
from .search import MAX_QUERY_CHARS, SearchError, search

log = logging.getLogger("knowledge")

MAX_QUESTIONS = 2000
MAX_PASSAGES = 20  # right passages of one question
MAX_PASSAGE_CHARS = PASSAGE_CHARS  # 4,000: what a reply stores of a passage
MAX_NAME_CHARS = 200
DEPTH = 10  # hits searched per question: recall@10 and MRR@10 read this far
MEASURE_IN_REQUEST = 200  # questions: a test this small is measured while its page waits (~15 ms a search)
PROGRESS_EVERY = 10  # questions between a job's progress writes (each also checks for a cancel)
CSV_SEPARATOR = " || "  # between passages in one CSV cell
# The settings a measurement depends on, besides the chunks themselves (KnowledgeBase.chunks_version).
SETTINGS = (
    "chunk_tokens",
    "chunk_overlap",
    "embedding_model",
    "fusion_weight",
    "collapse_duplicates",
    "rerank",
    "expand_query",
)
# The figures of a measurement, as RetrievalTest.figures keeps them (Figures, below) and the API names them.
FIGURES = (
    "recall_at_1",
    "recall_at_5",
    "recall_at_10",
    "mrr_at_10",
    "not_retrieved",
    "passage_not_in_base",
    "latency_ms",
)
# "handbook.pdf p. 4", "Guide.docx page 12": a document (a file name) and a page; or a file name
# alone, without spaces ("handbook.pdf"): any page of it.
DOCUMENT_PAGE = re.compile(
    r"^\s*(?:(?P<document>[^\n]{1,255}?\.[A-Za-z0-9]{1,6})\s*,?\s*(?:p\.?|page)\s*(?P<page>\d{1,6})"
    r"|(?P<name>[^\s]{1,250}\.[A-Za-z][A-Za-z0-9]{0,5}))\s*$",
    re.IGNORECASE,
)
SHAPE = (
    'One question a line: {"question": "How long is the warranty?", "passages": ["The warranty lasts two '
    'years.", "handbook.pdf p. 4"]} (JSONL), or CSV with the columns question and passages (several '
    f'separated by "{CSV_SEPARATOR.strip()}") or question and passage.'
)


class RetrievalTestError(StudioError):
    pass


class Passage(TypedDict, total=False):
    """A right passage: its text, or a document (by name) and its page (None: any page)."""

    text: str
    document: str
    page: int | None


class QuestionResult(TypedDict):
    question: str
    rank: int | None  # of the first hit holding a right passage, 1-DEPTH; None: not retrieved
    passage_not_in_base: bool  # no passage of the base matches any right passage at all
    matched: dict  # the hit that matched: {"chunk", "document", "page"}; {} when none did


class Figures(TypedDict):
    """A measurement, as RetrievalTest.figures stores it."""

    questions: int
    recall_at_1: float | None  # share of the questions whose first right passage is at rank ≤ 1
    recall_at_5: float | None
    recall_at_10: float | None
    mrr_at_10: float | None  # mean of 1 / that rank (0 when it is past DEPTH)
    not_retrieved: int  # questions with no right passage in the top DEPTH
    passage_not_in_base: int  # of those, the ones whose passages are nowhere in the base
    latency_ms: dict  # {"p50", "p95"} of one search


class Measurement(Figures):
    results: list[QuestionResult]  # in the test's order


# --- Importing ----------------------------------------------------------------------------------


def require_tests_owner(knowledge_base: KnowledgeBase, user) -> None:
    if knowledge_base.owner_id != user.pk:
        raise Forbidden("Only the owner of this knowledge base can add or delete its retrieval tests.")


def _text(value, field: str, *, limit: int, what: str) -> str:
    if not isinstance(value, str):
        raise RetrievalTestError(f"{what} must be text", field)
    value = value.strip()
    if not value:
        raise RetrievalTestError(f"{what} must not be empty", field)
    if len(value) > limit:
        raise RetrievalTestError(f"{what} is {len(value):,} characters long; at most {limit:,}", field)
    reason = unstorable_reason(value)
    if reason:
        raise RetrievalTestError(reason, field)
    return value


def clean_passage(raw, field: str) -> Passage:
    """A passage's text, "doc p. N", or an object {"text"} / {"document", "page"}."""
    if isinstance(raw, str):
        text = _text(raw, field, limit=MAX_PASSAGE_CHARS, what="a passage")
        matched = DOCUMENT_PAGE.match(text)
        if matched and matched["name"]:
            return {"document": matched["name"], "page": None}
        return {"document": matched["document"].strip(), "page": int(matched["page"])} if matched else {"text": text}
    if isinstance(raw, dict) and raw.get("text") not in (None, ""):
        return {"text": _text(raw["text"], f"{field}.text", limit=MAX_PASSAGE_CHARS, what="a passage")}
    if isinstance(raw, dict) and raw.get("document") not in (None, ""):
        page = raw.get("page")
        if page is not None and (isinstance(page, bool) or not isinstance(page, int) or not 1 <= page < 10**6):
            raise RetrievalTestError("a page must be a whole number from 1", f"{field}.page")
        return {"document": _text(raw["document"], f"{field}.document", limit=255, what="a document"), "page": page}
    raise RetrievalTestError('a passage is its text, "doc.pdf p. N", {"text"} or {"document", "page"}', field)


def clean_question(raw, field: str) -> tuple[str, list[Passage]]:
    """{"question", "passages": [...]} (or "passage": one) → the question and its passages."""
    if not isinstance(raw, dict):
        raise RetrievalTestError('must be an object {"question", "passages"}', field)
    question = _text(raw.get("question"), f"{field}.question", limit=MAX_QUERY_CHARS, what="the question")
    given = raw.get("passages", raw.get("passage"))
    items = given if isinstance(given, list) else [] if given in (None, "") else [given]
    if not items:
        raise RetrievalTestError("needs at least one right passage", f"{field}.passages")
    if len(items) > MAX_PASSAGES:
        raise RetrievalTestError(f"names {len(items):,} passages; at most {MAX_PASSAGES}", f"{field}.passages")
    passages = [clean_passage(item, f"{field}.passages[{n}]") for n, item in enumerate(items)]
    return question, list({json.dumps(p, sort_keys=True): p for p in passages}.values())  # each passage once


def _too_many(count: int) -> RetrievalTestError:
    return RetrievalTestError(
        f"holds {count:,} questions; a retrieval test holds at most {MAX_QUESTIONS:,}: split it",
        "questions",
        code="too_many_questions",
    )


def questions_from_jsonl(text: str) -> list[tuple[str, list[Passage]]]:
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if len(lines) > MAX_QUESTIONS:  # counted before a line is parsed
        raise _too_many(len(lines))
    questions = []
    for number, line in lines:
        try:
            raw = parse_json(line)
        except InputError as exc:
            raise RetrievalTestError(f"{exc}. {SHAPE}", f"line {number}", code="bad_line") from None
        try:
            questions.append(clean_question(raw, f"line {number}"))
        except RetrievalTestError as exc:
            exc.code = "bad_line"
            raise
    return questions


def questions_from_csv(text: str) -> list[tuple[str, list[Passage]]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip().lower() for name in next(reader, [])]
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise RetrievalTestError(f"is not CSV ({exc}). {SHAPE}", f"line {reader.line_num}", code="bad_line") from None
    if "question" not in header or not {"passages", "passage"} & set(header):
        raise RetrievalTestError(f"the first line must name the columns. {SHAPE}", "line 1", code="bad_line")
    if len(rows) > MAX_QUESTIONS:
        raise _too_many(len(rows))
    columns = {name: header.index(name) for name in ("question", "passages", "passage") if name in header}
    questions = []
    for number, row in rows:
        cells = {name: row[at] if at < len(row) else "" for name, at in columns.items()}
        passages = [part for part in cells.get("passages", "").split(CSV_SEPARATOR.strip()) if part.strip()]
        passages += [cells["passage"]] if cells.get("passage", "").strip() else []
        try:
            questions.append(clean_question({"question": cells["question"], "passages": passages}, f"line {number}"))
        except RetrievalTestError as exc:
            exc.code = "bad_line"
            raise
    return questions


def questions_from_file(upload) -> list[tuple[str, list[Passage]]]:
    """A JSONL or CSV file (by its name's extension; else by its first character)."""
    limit = settings.KNOWLEDGE_RETRIEVAL_TEST_MAX_BYTES
    if upload.size > limit:  # by its size, before a byte is read
        raise RetrievalTestError(
            f"is {upload.size / 2**20:,.1f} MB; a retrieval test file is at most {limit / 2**20:,.0f} MB",
            "file",
            status=413,
            code="file_too_large",
        )
    try:
        text = upload.read(limit + 1).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RetrievalTestError("is not UTF-8 text", "file") from None
    name = (getattr(upload, "name", "") or "").lower()
    if name.endswith((".jsonl", ".ndjson", ".json")) or (not name.endswith(".csv") and text.lstrip()[:1] == "{"):
        return questions_from_jsonl(text)
    return questions_from_csv(text)


def retrieval_test_create(
    *, user, knowledge_base: KnowledgeBase, name, questions, source: str = RetrievalTest.Source.IMPORT
) -> RetrievalTest:
    """Store a test of `questions` as the API sends them: [{"question", "passages"}]. Checked whole
    first (their number before any of them); stored in one transaction."""
    require_tests_owner(knowledge_base, user)
    if not isinstance(questions, list):
        raise RetrievalTestError('must be a list of {"question", "passages"}', "questions")
    if len(questions) > MAX_QUESTIONS:
        raise _too_many(len(questions))
    cleaned = [clean_question(item, f"questions[{n}]") for n, item in enumerate(questions)]
    return _test_store(user=user, knowledge_base=knowledge_base, name=name, cleaned=cleaned, source=source)


def _test_store(*, user, knowledge_base, name, cleaned: list[tuple[str, list[Passage]]], source) -> RetrievalTest:
    name = _text(name, "name", limit=MAX_NAME_CHARS, what="the name")
    if not cleaned:
        raise RetrievalTestError("a retrieval test needs at least one question", "questions")
    with transaction.atomic():
        test = RetrievalTest.objects.create(
            knowledge_base=knowledge_base, name=name, source=source, created_by=user, question_count=len(cleaned)
        )
        RetrievalQuestion.objects.bulk_create(
            [
                RetrievalQuestion(test=test, ordinal=n, question=question, passages=passages)
                for n, (question, passages) in enumerate(cleaned)
            ],
            batch_size=500,
        )
        if len(cleaned) > MEASURE_IN_REQUEST:  # measured at once, in the background
            measurement_queue(test)
    return test


def retrieval_test_import(*, user, knowledge_base: KnowledgeBase, name, upload) -> RetrievalTest:
    require_tests_owner(knowledge_base, user)  # before the file is read
    if upload is None:
        raise RetrievalTestError("send a JSONL or CSV file (a multipart field named “file”)", "file")
    cleaned = questions_from_file(upload)
    name = name if isinstance(name, str) and name.strip() else (getattr(upload, "name", "") or "")[:MAX_NAME_CHARS]
    return _test_store(
        user=user, knowledge_base=knowledge_base, name=name, cleaned=cleaned, source=RetrievalTest.Source.IMPORT
    )


def retrieval_test_delete(*, user, test: RetrievalTest) -> None:
    """Deleted with its questions and its measurement job (a running one stops at its next step)."""
    require_tests_owner(test.knowledge_base, user)
    test.delete()


# Failure cases live in evals/, which knowledge may not import (tests/test_architecture.py): evals
# hands its builder over when the app is ready (evals/apps.py), as it does for examples.
_case_source: Callable[..., RetrievalTest] | None = None


def register_case_source(build: Callable[..., RetrievalTest]) -> None:
    """`build(user=, knowledge_base=, name=, prompt=)` → a stored test of judged failure cases."""
    global _case_source
    _case_source = build


def retrieval_test_from_cases(*, user, knowledge_base: KnowledgeBase, name="", prompt=None) -> RetrievalTest:
    require_tests_owner(knowledge_base, user)
    if _case_source is None:
        raise RetrievalTestError("this studio has no failure cases to build a test from", "from_cases")
    return _case_source(user=user, knowledge_base=knowledge_base, name=name, prompt=prompt)


# --- Matching -----------------------------------------------------------------------------------


def _normalised(text) -> str:
    return " ".join(str(text or "").split()).casefold()


def _field(item, name: str):
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _text_matches(passage: str, other: str) -> bool:
    """Both normalised. `other` holds the passage, or the first or the last half of its words (a
    chunk boundary may cut a passage in two: one side holds at least half), or the passage holds
    `other` (a chunk smaller than the passage)."""
    if not passage or not other:
        return False
    if passage in other or other in passage:
        return True
    words = passage.split()
    half = (len(words) + 1) // 2
    return " ".join(words[:half]) in other or " ".join(words[len(words) - half :]) in other


def _same_place(passage: Passage, document, page) -> bool:
    return _normalised(passage["document"]) == _normalised(document) and passage.get("page") in (None, page)


def passage_matches(passage: Passage, hit) -> bool:
    """Whether a search hit holds a right passage. A text matches the hit's text (whitespace
    collapsed, case folded: see _text_matches); a document matches a hit from that document (by
    name, case-insensitive) and page, when one is given, or one of the near-duplicate copies
    collapsed under the hit (`also_in`: each a {"chunk", "document", "page", "heading"})."""
    if passage.get("text"):
        return _text_matches(_normalised(passage["text"]), _normalised(hit.text))
    places = [(hit.document, hit.page)] + [
        (_field(item, "document"), _field(item, "page")) for item in getattr(hit, "also_in", None) or []
    ]
    return any(_same_place(passage, document, page) for document, page in places)


def first_right(passages: list[Passage], hits) -> tuple[int | None, dict]:
    """The rank (from 1) of the first hit holding one of `passages`, and that hit; (None, {})."""
    for rank, hit in enumerate(hits, start=1):
        if any(passage_matches(passage, hit) for passage in passages):
            return rank, {"chunk": hit.chunk_id, "document": hit.document, "page": hit.page}
    return None, {}


class BaseContents:
    """Which right passages the base holds anywhere (in any chunk of its active index): asked only
    for the questions search did not retrieve, so a passage that matches nothing is reported, never
    searched for forever. Chunks are read in batches, so a large base is never in memory at once."""

    BATCH = 2000
    KEY_WORDS = 3  # a chunk is looked up by its first words, to find those a long passage holds

    def __init__(self, knowledge_base: KnowledgeBase):
        self.knowledge_base = knowledge_base

    def _chunks(self):
        return (
            Chunk.objects.active()
            .filter(knowledge_base=self.knowledge_base, document__status=Document.Status.READY)
            .order_by("pk")
        )

    def holding(self, passages: list[Passage]) -> set[str]:
        """The keys (passage_key) of those of `passages` that some chunk of the base matches."""
        found: set[str] = set()
        places = set(self._chunks().values_list("document__name", "page").distinct())
        for passage in passages:
            if not passage.get("text") and any(_same_place(passage, name, page) for name, page in places):
                found.add(passage_key(passage))
        texts = {passage_key(p): _normalised(p["text"]) for p in passages if p.get("text")}
        last = 0
        while texts.keys() - found:
            batch = list(self._chunks().filter(pk__gt=last).values_list("pk", "text")[: self.BATCH])
            if not batch:
                break
            last = batch[-1][0]
            chunks = [_normalised(text) for _, text in batch]
            joined = "\x00".join(chunks)  # a passage (no \x00 in it) never matches across two chunks
            by_start: dict[str, list[str]] = {}
            for chunk in chunks:
                if chunk:
                    by_start.setdefault(" ".join(chunk.split()[: self.KEY_WORDS]), []).append(chunk)
            for key, text in texts.items():
                if key not in found and self._holds(text, joined, by_start):
                    found.add(key)
        return found

    def _holds(self, passage: str, joined: str, by_start: dict[str, list[str]]) -> bool:
        words = passage.split()
        half = (len(words) + 1) // 2
        # A chunk holds the passage or one of its halves (no piece holds \x00: never across two chunks).
        if any(piece in joined for piece in (passage, " ".join(words[:half]), " ".join(words[len(words) - half :]))):
            return True
        # The passage holds a chunk: one that starts at one of its words.
        for start in range(len(words)):
            for size in range(1, self.KEY_WORDS + 1):
                if any(chunk in passage for chunk in by_start.get(" ".join(words[start : start + size]), ())):
                    return True
        return False


def passage_key(passage: Passage) -> str:
    return json.dumps(passage, sort_keys=True)


# --- Measuring ----------------------------------------------------------------------------------


class Cancelled(Exception):
    pass


def version_of(knowledge_base: KnowledgeBase) -> dict:
    """What a measurement depends on, read from the database now: the chunks search reads
    (chunks_version: bumped by every document ready or gone and every rebuild's switch-over) and
    the index and ranking settings."""
    return KnowledgeBase.objects.filter(pk=knowledge_base.pk).values("chunks_version", *SETTINGS).get()


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1], 1)


def figures_of(results: list[QuestionResult], latencies_ms: list[float]) -> Figures:
    count = len(results)
    ranks = [result["rank"] for result in results]
    share = lambda k: round(sum(1 for rank in ranks if rank is not None and rank <= k) / count, 4) if count else None  # noqa: E731
    return {
        "questions": count,
        "recall_at_1": share(1),
        "recall_at_5": share(5),
        "recall_at_10": share(10),
        "mrr_at_10": round(sum(1 / rank for rank in ranks if rank) / count, 4) if count else None,
        "not_retrieved": sum(1 for rank in ranks if rank is None),
        "passage_not_in_base": sum(1 for result in results if result["passage_not_in_base"]),
        "latency_ms": {"p50": _percentile(latencies_ms, 0.5), "p95": _percentile(latencies_ms, 0.95)},
    }


def measure(
    test: RetrievalTest, *, user, search_options: dict | None = None, progress: Callable[[int, int], bool] | None = None
) -> Measurement:
    """Search the test's base for every question (the top DEPTH, as `user`, with `search_options`
    passed on to knowledge.search.search: a mode, ranking overrides) and find where the first right
    passage came. Stores nothing (measurement_store does). `progress(done, total)` is called every
    PROGRESS_EVERY questions and at the end; True from it stops the measurement (Cancelled).
    SearchError (a base its search cannot read) goes to the caller."""
    knowledge_base = test.knowledge_base
    rows = list(test.questions.order_by("ordinal").values_list("question", "passages"))
    results: list[QuestionResult] = []
    latencies = []
    for done, (question, passages) in enumerate(rows, start=1):
        started = time.perf_counter()
        answer = search(user=user, knowledge_base=knowledge_base, query=question, k=DEPTH, **(search_options or {}))
        latencies.append((time.perf_counter() - started) * 1000)
        rank, matched = first_right(passages, answer.hits)
        results.append({"question": question, "rank": rank, "passage_not_in_base": False, "matched": matched})
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == len(rows)) and progress(done, len(rows)):
            raise Cancelled
    missed = [n for n, result in enumerate(results) if result["rank"] is None]
    if missed:
        held = BaseContents(knowledge_base).holding([p for n in missed for p in rows[n][1]])
        for n in missed:
            results[n]["passage_not_in_base"] = not any(passage_key(p) in held for p in rows[n][1])
    return {**figures_of(results, latencies), "results": results}


def measurement_store(test: RetrievalTest, measurement: Measurement, version: dict) -> None:
    """The figures on the test, each question's result on its row, in one transaction."""
    figures = {key: value for key, value in measurement.items() if key != "results"}
    by_ordinal = dict(enumerate(measurement["results"]))
    with transaction.atomic():
        questions = list(test.questions.only("pk", "ordinal"))
        for question in questions:
            result = by_ordinal.get(question.ordinal)
            if result is not None:
                question.rank, question.passage_not_in_base = result["rank"], result["passage_not_in_base"]
                question.matched = result["matched"]
        RetrievalQuestion.objects.bulk_update(questions, ["rank", "passage_not_in_base", "matched"], batch_size=500)
        RetrievalTest.objects.filter(pk=test.pk).update(
            figures=figures, measured_at=timezone.now(), measured_version=version
        )
    test.figures, test.measured_version = figures, version
    test.refresh_from_db(fields=["measured_at"])


@dataclass(frozen=True)
class MeasurementState:
    """Whether a test's figures hold for its base now, as a page and the API say it."""

    status: str  # "ready" (measured as the base is now), "measuring" (a job is at it), "failed"
    job: RetrievalMeasurement | None = None  # its progress while measuring
    error: str = ""  # why it could not be measured


def _measure_here(test: RetrievalTest, *, user, version: dict) -> MeasurementState:
    try:
        measurement = measure(test, user=user)
    except SearchError as exc:
        return MeasurementState("failed", error=exc.message)
    measurement_store(test, measurement, version)
    return MeasurementState("ready")


def retrieval_test_state(test: RetrievalTest, *, user, again: bool = False) -> MeasurementState:
    """The test measured for its base as it is now, when it is not already (or, `again`, in any
    case): in this request when it has at most MEASURE_IN_REQUEST questions (as `user`), else by a
    job (its state says "measuring" and carries its progress)."""
    version = version_of(test.knowledge_base)
    job = RetrievalMeasurement.objects.filter(pk=test.pk).first()
    if job is not None and job.active:
        return MeasurementState("measuring", job)
    if test.measured_version == version and not again:
        return MeasurementState("ready")
    if test.question_count <= MEASURE_IN_REQUEST:
        return _measure_here(test, user=user, version=version)
    if job is not None and job.status == JobStatus.FAILED and job.version == version and not again:
        return MeasurementState("failed", job, error=job.error)  # measured again when the base changes
    return MeasurementState("measuring", measurement_queue(test))


def retrieval_test_measure(*, user, test: RetrievalTest) -> MeasurementState:
    """ "Measure again" (its base's owner): whatever its figures say, as retrieval_test_state does."""
    require_tests_owner(test.knowledge_base, user)
    return retrieval_test_state(test, user=user, again=True)


def measurement_queue(test: RetrievalTest) -> RetrievalMeasurement:
    """A measurement of the test queued on the knowledge lane (unless one is queued or running)."""
    version = version_of(test.knowledge_base)
    with transaction.atomic():
        # Locked: two pages asking at once queue one job.
        job, created = RetrievalMeasurement.objects.select_for_update().get_or_create(
            test=test, defaults={"version": version, "total": test.question_count}
        )
        if not created and job.active:
            return job
        if not created:
            RetrievalMeasurement.objects.filter(pk=job.pk).update(
                status=JobStatus.QUEUED,
                version=version,
                done=0,
                total=test.question_count,
                note="",
                error="",
                cancel_requested=False,
                worker="",
                dispatched_at=None,
                started_at=None,
                heartbeat_at=None,
                finished_at=None,
            )
            job.refresh_from_db()
        transaction.on_commit(lambda: jobs.dispatch(RetrievalMeasurement, test.pk))
    return job


def measurements_queue_for(knowledge_base_id: int) -> int:
    """Every test of the base queued to be measured again (after a rebuild switched over, or its
    ranking settings changed). Returns how many."""
    tests = list(RetrievalTest.objects.filter(knowledge_base_id=knowledge_base_id).select_related("knowledge_base"))
    for test in tests:
        measurement_queue(test)
    return len(tests)


def measurement_run(test_id: int) -> None:
    """The job (knowledge/tasks.py): measure the test as its base's owner, against the base as it is
    when the job starts, with its progress on the job's row; the figures stored when it is done."""
    job = RetrievalMeasurement.objects.select_related("test__knowledge_base__owner").filter(pk=test_id).first()
    if job is None or not jobs.job_claim(job):
        return  # deleted or cancelled while queued, or delivered twice
    test = job.test
    version = version_of(test.knowledge_base)

    def progress(done: int, total: int) -> bool:
        asked = jobs.job_progress(job, done=done, total=total, note=f"{done:,} of {total:,} questions searched")
        still_mine = RetrievalMeasurement.objects.filter(pk=job.pk, status=JobStatus.RUNNING).exists()
        return asked or not still_mine  # cancelled, the test deleted, or the sweeper failed it

    try:
        measurement = measure(test, user=test.knowledge_base.owner, progress=progress)
    except Cancelled:
        jobs.job_end(job, JobStatus.CANCELLED, version=version)
    except SearchError as exc:
        jobs.job_end(job, JobStatus.FAILED, error=exc.message, version=version)
    except Exception as exc:
        log.exception("retrieval test %s: the measurement failed", test_id)
        jobs.job_end(job, JobStatus.FAILED, error=f"The measurement failed: {exc}", version=version)
    else:
        measurement_store(test, measurement, version)
        jobs.job_end(job, JobStatus.FINISHED, version=version)


def measurements_sweep() -> None:
    """The sweeper's part (studio.sweeping): measurements the job queue never got are sent again,
    those whose worker died are failed (the next look at the test queues it again)."""
    jobs.jobs_sweep(RetrievalMeasurement)

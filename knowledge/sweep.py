"""The tuning sweep: "Tune retrieval" measures settings of a knowledge base against one of its
retrieval tests and applies the one a person picks.

What it varies (the grid): the chunk setting (size and overlap, in the embedder's tokens), the
fusion weight (the vector ranking's share in hybrid fusion: 0 keywords only, 1 vectors only),
near-duplicate collapse, and reranking (where a reranker is configured); `k` adds a recall@k
column per k asked. Every setting is measured on an in-memory twin of the base's index
(knowledge/memory_index.py): the base's own chunk setting from its stored chunks and vectors, every
other one cut again from the documents and embedded by this job, one chunk setting at a time. Each
question is searched once per chunk setting and ranked once per ranking setting, its right passage
looked for as a test's measurement does (retrieval_tests.first_right), so the row of the base's
current settings shows the figures its test page shows.

Every bound is checked before any work: at most MAX_SETTINGS settings and MAX_CHUNK_SETTINGS chunk
settings, a test of at most retrieval_tests.MAX_QUESTIONS questions, a budget of MIN_MINUTES to
MAX_MINUTES. The job (`RetrievalSweep`, on the knowledge lane) stops at its budget, listing the
settings it did not reach as "skipped: budget"; a cancel keeps what it measured.

Apply ("Use this setting"): the row's ranking settings through services.knowledge_base_ranking_update
and, where its chunk setting is not the base's, a rebuild with it (services.knowledge_base_rebuild:
the index in use answers until the switch-over), in one transaction: both or neither.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from itertools import product
from typing import TypedDict

from django.conf import settings as django_settings
from django.db import transaction

from studio import chat_activity, jobs
from studio.errors import Forbidden, NotFound, StudioError
from studio.input_checks import InputError, number_in_range
from studio.jobs import JobStatus
from studio.llm.loading import ModelLoadError

from . import engines, services
from .memory_index import MemoryIndex
from .models import Document, KnowledgeBase, RetrievalSweep, RetrievalTest
from .parsing import DocumentError
from .retrieval_tests import DEPTH, MAX_QUESTIONS, figures_of, first_right
from .search import MAX_K

log = logging.getLogger("knowledge")

MAX_SETTINGS = 200
MAX_CHUNK_SETTINGS = 6  # each one but the base's own is cut and embedded again: the slow part
MIN_MINUTES, MAX_MINUTES, DEFAULT_MINUTES = 1, 120, 20
# Chunk sizes a sweep tries (besides the base's own): from a sentence or two to what the embedder
# reads (254 tokens and its own 2). A form offers each with its usual overlap.
CHUNK_SIZES = (64, 96, 128, 160, 200, 254)
FORM_OVERLAPS = {64: 8, 96: 16, 128: 24, 160: 24, 200: 30, 254: 40}
DEFAULT_GRID = {
    "chunk": [[128, 24], [200, 30], [254, 40]],
    "fusion_weight": [0.0, 0.3, 0.5, 0.7, 0.85, 1.0],
    "collapse_duplicates": [True, False],
    "rerank": [False],
    "k": [],
}  # 36 settings
GRID_SHAPE = (
    '{"chunk": [[128, 24], [200, 30]], "fusion_weight": [0, 0.5, 1], "collapse_duplicates": [true, false], '
    '"rerank": [false], "k": [3, 20]} (each list optional: left out, the default one)'
)
QUESTIONS_EVERY = 20  # questions between a job's progress writes while searching or embedding them
PAUSED = "paused: chat replies come first"


class SweepError(StudioError):
    pass


class SweepRow(TypedDict, total=False):
    """One setting of a sweep and, once measured, its figures (RetrievalSweep.rows)."""

    chunk_tokens: int
    chunk_overlap: int
    fusion_weight: float
    collapse_duplicates: bool
    rerank: bool
    status: str  # "pending", "measured", or "skipped" (`reason`: "budget", "cancelled", "failed")
    reason: str
    questions: int
    recall_at_1: float | None
    recall_at_5: float | None
    recall_at_10: float | None
    mrr_at_10: float | None
    recall_at_k: dict[str, float]  # the grid's k: {"3": 0.6}
    p95_ms: float | None  # of one search, the query's embedding left out (the same for every setting)
    notes: list[str]  # what did not run as asked ("not reranked: ... (3 of 60 questions)")


# --- The grid -------------------------------------------------------------------------------------


def default_grid(knowledge_base: KnowledgeBase) -> dict:
    """DEFAULT_GRID with the base's own settings added where it lacks them (its chunk setting first,
    its fusion weight in order, reranking on when it reranks), so the row of its current settings,
    the figures its test page shows, is always in the table: 36 settings, 42 or 48 with them."""
    own = [knowledge_base.chunk_tokens, knowledge_base.chunk_overlap]
    return {
        "chunk": DEFAULT_GRID["chunk"] if own in DEFAULT_GRID["chunk"] else [own, *DEFAULT_GRID["chunk"]],
        "fusion_weight": sorted({*DEFAULT_GRID["fusion_weight"], knowledge_base.fusion_weight}),
        "collapse_duplicates": DEFAULT_GRID["collapse_duplicates"],
        "rerank": [False, True] if knowledge_base.rerank else DEFAULT_GRID["rerank"],
        "k": DEFAULT_GRID["k"],
    }


def _listed(raw, defaults: dict, name: str) -> list:
    values = raw.get(name, defaults[name])
    return values if isinstance(values, list) else [values]


def clean_grid(raw, *, knowledge_base: KnowledgeBase) -> dict:
    """The grid asked ({"chunk", "fusion_weight", "collapse_duplicates", "rerank", "k"}, each a list;
    a list left out, or the whole grid: the default's, default_grid), checked: its size first,
    before any value is read."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SweepError(f"must be an object: {GRID_SHAPE}", "grid")
    unknown = sorted(set(raw) - set(DEFAULT_GRID))
    if unknown:
        raise SweepError(f"{', '.join(unknown)[:200]}: not a setting a sweep varies. {GRID_SHAPE}", "grid")
    defaults = default_grid(knowledge_base)
    lists = {name: _listed(raw, defaults, name) for name in DEFAULT_GRID}
    chunks = len(lists["chunk"])
    count = chunks * len(lists["fusion_weight"]) * len(lists["collapse_duplicates"]) * len(lists["rerank"])
    if count > MAX_SETTINGS:
        raise SweepError(
            f"holds {count:,} settings (chunk settings {chunks:,} × fusion weights {len(lists['fusion_weight']):,} × "
            f"collapse {len(lists['collapse_duplicates']):,} × rerank {len(lists['rerank']):,}); a sweep measures at "
            f"most {MAX_SETTINGS}: ask for fewer",
            "grid",
            code="too_many_settings",
        )
    if chunks > MAX_CHUNK_SETTINGS:
        raise SweepError(
            f"names {chunks:,} chunk settings; a sweep tries at most {MAX_CHUNK_SETTINGS} (each is indexed again)",
            "grid.chunk",
            code="too_many_settings",
        )
    if len(lists["k"]) > MAX_K:
        raise SweepError(f"names {len(lists['k']):,} values; at most {MAX_K}", "grid.k")
    if count == 0:
        raise SweepError("every list needs at least one value", "grid")
    grid = {
        "chunk": _unique(_chunk(item, f"grid.chunk[{n}]", knowledge_base) for n, item in enumerate(lists["chunk"])),
        "fusion_weight": _unique(
            _number(value, f"grid.fusion_weight[{n}]", low=0.0, high=1.0)
            for n, value in enumerate(lists["fusion_weight"])
        ),
        "collapse_duplicates": _unique(
            _boolean(value, f"grid.collapse_duplicates[{n}]") for n, value in enumerate(lists["collapse_duplicates"])
        ),
        "rerank": _unique(_boolean(value, f"grid.rerank[{n}]") for n, value in enumerate(lists["rerank"])),
        "k": sorted(
            set(
                int(_number(value, f"grid.k[{n}]", low=1, high=MAX_K, whole=True)) for n, value in enumerate(lists["k"])
            )
        ),
    }
    if True in grid["rerank"] and not engines.reranker_configured():
        raise SweepError(
            "no reranker is configured (KNOWLEDGE_RERANKER_URL): a sweep can only try reranking off", "grid.rerank"
        )
    return grid


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def _number(value, field: str, *, low, high, whole: bool = False):
    try:
        return number_in_range(value, low=low, high=high, whole=whole)
    except InputError as exc:
        raise SweepError(str(exc), field) from None


def _boolean(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise SweepError("must be true or false", field)
    return value


def _chunk(item, field: str, knowledge_base: KnowledgeBase) -> tuple[int, int]:
    """[tokens, overlap] (or {"chunk_tokens", "chunk_overlap"}): a size of CHUNK_SIZES or the base's own."""
    if isinstance(item, dict):
        item = [item.get("chunk_tokens"), item.get("chunk_overlap")]
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        raise SweepError("must be [chunk tokens, overlap tokens], e.g. [128, 24]", field)
    tokens = int(_number(item[0], field, low=services.MIN_CHUNK_TOKENS, high=services.MAX_CHUNK_TOKENS, whole=True))
    if tokens not in CHUNK_SIZES and tokens != knowledge_base.chunk_tokens:
        raise SweepError(
            f"{tokens} tokens: a sweep tries {', '.join(map(str, CHUNK_SIZES))} or this base's own "
            f"({knowledge_base.chunk_tokens})",
            field,
        )
    overlap = int(_number(item[1], f"{field} overlap", low=0, high=tokens - 1, whole=True))
    return tokens, overlap


def planned_rows(grid: dict) -> list[SweepRow]:
    """Every setting of the grid, pending, in its order: chunk setting, fusion weight, collapse, rerank."""
    return [
        {
            "chunk_tokens": tokens,
            "chunk_overlap": overlap,
            "fusion_weight": weight,
            "collapse_duplicates": collapse,
            "rerank": rerank,
            "status": "pending",
        }
        for (tokens, overlap), weight, collapse, rerank in product(
            grid["chunk"], grid["fusion_weight"], grid["collapse_duplicates"], grid["rerank"]
        )
    ]


def in_use(row: SweepRow, knowledge_base: KnowledgeBase) -> bool:
    """Whether the row's settings are the base's now (a sweep never expands questions: a base that
    does has no row in use)."""
    return (
        not knowledge_base.expand_query
        and row["chunk_tokens"] == knowledge_base.chunk_tokens
        and row["chunk_overlap"] == knowledge_base.chunk_overlap
        and abs(row["fusion_weight"] - knowledge_base.fusion_weight) < 1e-9
        and row["collapse_duplicates"] == knowledge_base.collapse_duplicates
        and row["rerank"] == knowledge_base.rerank
    )


def best_of(rows: list[SweepRow]) -> int | None:
    """The index of the best measured row: the highest recall@5, then MRR@10, then the fastest (p95);
    ties go to the first in the grid's order."""
    measured = [n for n, row in enumerate(rows) if row["status"] == "measured"]
    if not measured:
        return None
    return max(
        measured,
        key=lambda n: (rows[n]["recall_at_5"] or 0.0, rows[n]["mrr_at_10"] or 0.0, -(rows[n]["p95_ms"] or 0.0), -n),
    )


# --- Starting, cancelling, applying -----------------------------------------------------------------


def require_sweep_owner(knowledge_base: KnowledgeBase, user) -> None:
    if knowledge_base.owner_id != user.pk:
        raise Forbidden("Only the owner of this knowledge base can tune its retrieval.")


def sweep_create(
    *, user, knowledge_base: KnowledgeBase, test: RetrievalTest, grid=None, minutes=None
) -> RetrievalSweep:
    """Queue a sweep of the grid (None: DEFAULT_GRID) against `test`, a test of this base, within
    `minutes` (DEFAULT_MINUTES when None). Refused before any work when a bound is passed, or while
    another sweep of the base is queued or running (409)."""
    require_sweep_owner(knowledge_base, user)
    if test.knowledge_base_id != knowledge_base.pk:
        raise NotFound("This knowledge base has no such retrieval test.")
    grid = clean_grid(grid, knowledge_base=knowledge_base)  # its size first: before anything else is read
    minutes = DEFAULT_MINUTES if minutes in (None, "") else minutes
    minutes = int(_number(minutes, "minutes", low=MIN_MINUTES, high=MAX_MINUTES, whole=True))
    if test.question_count > MAX_QUESTIONS:
        raise SweepError(
            f"holds {test.question_count:,} questions; a sweep measures a test of at most {MAX_QUESTIONS:,}",
            "retrieval_test",
        )
    rows = planned_rows(grid)
    if not knowledge_base.documents.filter(status=Document.Status.READY).exists():
        raise SweepError("this knowledge base has no ready documents to measure yet", "knowledge_base")
    with transaction.atomic():
        # Locked: two sweeps asked at once start one.
        KnowledgeBase.objects.select_for_update().filter(pk=knowledge_base.pk).first()
        if RetrievalSweep.objects.filter(knowledge_base=knowledge_base, status__in=jobs.ACTIVE).exists():
            raise SweepError(
                "a sweep of this knowledge base is already queued or running: wait for it, or cancel it",
                "status",
                status=409,
            )
        sweep = RetrievalSweep.objects.create(
            knowledge_base=knowledge_base,
            test=test,
            created_by=user,
            grid=grid,
            minutes=minutes,
            rows=rows,
            total=len(rows),
        )
        transaction.on_commit(lambda: jobs.dispatch(RetrievalSweep, sweep.pk))
    return sweep


def sweep_cancel(*, user, sweep: RetrievalSweep) -> None:
    """A queued sweep is cancelled at once, a running one at its next step; what it measured stays."""
    require_sweep_owner(sweep.knowledge_base, user)
    jobs.job_cancel(sweep)
    if sweep.status == JobStatus.CANCELLED:  # it was still queued
        rows = _skipped(sweep.rows, "cancelled")
        RetrievalSweep.objects.filter(pk=sweep.pk).update(rows=rows)
        sweep.rows = rows


def sweep_apply(*, user, sweep: RetrievalSweep, row) -> bool:
    """The row's settings on the base: its ranking settings at once, and a rebuild with its chunk
    setting where that is not the base's (the index in use answers until the switch). Both or
    neither. Returns whether a rebuild started."""
    knowledge_base = sweep.knowledge_base
    require_sweep_owner(knowledge_base, user)
    index = int(_number(row, "row", low=0, high=max(len(sweep.rows) - 1, 0), whole=True))
    if sweep.active:
        raise SweepError("the sweep is still running: use a setting once it ends (or cancel it)", "row", status=409)
    chosen = sweep.rows[index]
    if chosen["status"] != "measured":
        raise SweepError(f"setting {index + 1} was not measured ({chosen.get('reason') or chosen['status']})", "row")
    knowledge_base.refresh_from_db()
    rebuild = (chosen["chunk_tokens"], chosen["chunk_overlap"]) != (
        knowledge_base.chunk_tokens,
        knowledge_base.chunk_overlap,
    )
    with transaction.atomic():
        services.knowledge_base_ranking_update(
            user=user,
            knowledge_base=knowledge_base,
            fusion_weight=chosen["fusion_weight"],
            collapse_duplicates=chosen["collapse_duplicates"],
            rerank=chosen["rerank"],
        )
        if rebuild:
            services.knowledge_base_rebuild(
                user=user,
                knowledge_base=knowledge_base,
                chunk_tokens=chosen["chunk_tokens"],
                chunk_overlap=chosen["chunk_overlap"],
            )
        RetrievalSweep.objects.filter(pk=sweep.pk).update(applied_row=index)
    sweep.applied_row = index
    return rebuild


def _skipped(rows: list[SweepRow], reason: str) -> list[SweepRow]:
    return [{**row, "status": "skipped", "reason": reason} if row["status"] == "pending" else row for row in rows]


# --- The job ----------------------------------------------------------------------------------------


class Stopped(Exception):
    """Cancelled, deleted (its test or base), or failed by the sweeper meanwhile."""


class BudgetSpent(Exception):
    pass


def sweep_run(sweep_id: int) -> None:
    """The job (knowledge/tasks.py): measure every setting it can within its budget."""
    sweep = RetrievalSweep.objects.select_related("knowledge_base", "test").filter(pk=sweep_id).first()
    if sweep is None or not jobs.job_claim(sweep):
        return  # deleted or cancelled while queued, or delivered twice
    run = SweepRun(sweep)
    try:
        run.measure_all()
    except Stopped:
        run.end(JobStatus.CANCELLED, "cancelled")
    except BudgetSpent:
        run.end(JobStatus.FINISHED, "budget")
    except (DocumentError, ModelLoadError) as exc:
        run.end(JobStatus.FAILED, "failed", error=f"A document could not be indexed again: {exc}")
    except (engines.EngineError, engines.QueryEmbeddingUnavailable) as exc:
        run.end(JobStatus.FAILED, "failed", error=exc.message)
    except Exception as exc:
        log.exception("retrieval sweep %s failed", sweep_id)
        run.end(JobStatus.FAILED, "failed", error=f"The sweep failed: {type(exc).__name__}: {str(exc)[:300]}")
    else:
        run.end(JobStatus.FINISHED, "")


class SweepRun:
    def __init__(self, sweep: RetrievalSweep):
        self.sweep = sweep
        self.knowledge_base = sweep.knowledge_base
        self.rows: list[SweepRow] = [dict(row) for row in sweep.rows]
        self.deadline = time.monotonic() + sweep.minutes * 60
        self.ks = list(sweep.grid.get("k", []))
        self.depth = max([DEPTH, *self.ks])  # hits searched per question: recall@k of the grid's k reads this far
        self.questions = list(sweep.test.questions.order_by("ordinal").values_list("question", "passages"))

    # --- progress, cancel, budget ---

    def measured(self) -> int:
        return sum(1 for row in self.rows if row["status"] == "measured")

    def beat(self, note: str, **fields) -> None:
        """Store progress (and beat the heart); Stopped when cancelled or no longer this job's."""
        asked = jobs.job_progress(self.sweep, note=note, **fields)
        if asked or not RetrievalSweep.objects.filter(pk=self.sweep.pk, status=JobStatus.RUNNING).exists():
            raise Stopped

    def within_budget(self) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetSpent

    def yield_to_chat(self) -> None:
        """Between batches embedded, on a job worker without a GPU: wait while chat replies are being
        written, as ingestion does (people first). The wait does not count against the budget."""
        started = time.monotonic()
        while chat_activity.replies_in_progress() and not _has_gpu():
            self.beat(PAUSED)
            time.sleep(django_settings.JOB_HEARTBEAT_SECONDS)  # then looks again, and beats its heart
        self.deadline += time.monotonic() - started

    def end(self, status: str, reason: str, *, error: str = "") -> None:
        rows = _skipped(self.rows, reason or "not reached")
        jobs.job_end(self.sweep, status, error=error, rows=rows, best_row=best_of(rows), done=self.measured())

    # --- measuring ---

    def measure_all(self) -> None:
        knowledge_base = self.knowledge_base
        query_vectors = []
        for done, (question, _) in enumerate(self.questions, start=1):
            # As search embeds a query: the base's embedder, in this process (numpy for the bundled one).
            query_vectors.append(
                engines.embed_query(knowledge_base.embedding_model, question, dimension=knowledge_base.dimension)
            )
            if done % QUESTIONS_EVERY == 0:
                self.within_budget()
                self.beat(f"embedding the questions: {done} of {len(self.questions)}")
        own = (knowledge_base.chunk_tokens, knowledge_base.chunk_overlap)
        chunk_settings = _unique((row["chunk_tokens"], row["chunk_overlap"]) for row in self.rows)
        chunk_settings.sort(key=lambda setting: setting != own)  # the base's own first: nothing to embed
        for number, setting in enumerate(chunk_settings, start=1):
            self.within_budget()
            where = f"chunk setting {number} of {len(chunk_settings)} ({setting[0]} tokens, overlap {setting[1]})"
            index = self.index_for(setting, own, where)
            try:
                found, retrieval_ms = self.candidates(index, query_vectors, where)
                for n, row in enumerate(self.rows):
                    if (row["chunk_tokens"], row["chunk_overlap"]) == setting:
                        self.within_budget()
                        self.rows[n] = self.measure(row, index, found, retrieval_ms)
                        self.beat(
                            f"measured {self.measured()} of {len(self.rows)} settings",
                            done=self.measured(),
                            rows=self.rows,
                            best_row=best_of(self.rows),
                        )
            finally:
                index.close()

    def index_for(self, setting: tuple[int, int], own: tuple[int, int], where: str) -> MemoryIndex:
        if setting == own:
            self.beat(f"{where}, the index in use: reading its passages")
            return MemoryIndex.of_base(self.knowledge_base)

        def progress(stage: str, done: int, total: int) -> None:
            self.within_budget()
            if stage == "embedding":
                self.yield_to_chat()
            unit = {"reading": "documents", "parsing": "pages", "embedding": "passages"}[stage]
            self.beat(f"{where}: {stage} {done} of {total} {unit}" if total else f"{where}: {stage}")

        return MemoryIndex.cut(
            self.knowledge_base, chunk_tokens=setting[0], chunk_overlap=setting[1], progress=progress
        )

    def candidates(self, index: MemoryIndex, query_vectors: list, where: str) -> tuple[list, list[float]]:
        """Each question's candidates in this index, and how long each took (ms): a search's part
        that no ranking setting changes."""
        found, took = [], []
        for done, ((question, _), vector) in enumerate(zip(self.questions, query_vectors), start=1):
            started = time.perf_counter()
            found.append(index.candidates(question, vector))
            took.append((time.perf_counter() - started) * 1000)
            if done % QUESTIONS_EVERY == 0:
                self.within_budget()
                self.beat(f"{where}: searching {done} of {len(self.questions)} questions")
        return found, took

    def measure(self, row: SweepRow, index: MemoryIndex, found: list, retrieval_ms: list[float]) -> SweepRow:
        """One setting's figures: each question ranked (its time: its candidates' plus its ranking's)
        and the rank of its first right passage, as a test's measurement finds it."""
        ranks, latencies, notes = [], [], Counter()
        for done, ((_, passages), candidates, candidates_ms) in enumerate(
            zip(self.questions, found, retrieval_ms), start=1
        ):
            started = time.perf_counter()
            hits, hit_notes = index.rank(
                candidates,
                k=self.depth,
                fusion_weight=row["fusion_weight"],
                collapse_duplicates=row["collapse_duplicates"],
                rerank=row["rerank"],
            )
            latencies.append(candidates_ms + (time.perf_counter() - started) * 1000)
            ranks.append(first_right(passages, hits)[0])
            notes.update(hit_notes)
            if row["rerank"] and done % QUESTIONS_EVERY == 0:  # a reranker's requests take time
                self.within_budget()
                self.beat(f"measured {self.measured()} of {len(self.rows)} settings; reranking question {done}")
        results = [
            {"question": "", "rank": rank if rank is not None and rank <= DEPTH else None, "passage_not_in_base": False}
            for rank in ranks
        ]
        figures = figures_of(results, latencies)
        count = len(ranks)
        return {
            **row,
            "status": "measured",
            "questions": count,
            "recall_at_1": figures["recall_at_1"],
            "recall_at_5": figures["recall_at_5"],
            "recall_at_10": figures["recall_at_10"],
            "mrr_at_10": figures["mrr_at_10"],
            "recall_at_k": {
                str(k): round(sum(1 for rank in ranks if rank is not None and rank <= k) / count, 4) if count else None
                for k in self.ks
            },
            "p95_ms": figures["latency_ms"]["p95"],
            "notes": [f"{note} ({times} of {count} questions)" for note, times in notes.items()],
        }


def _has_gpu() -> bool:
    import torch  # noqa: PLC0415 - torch: job workers only, never the web process

    return torch.cuda.is_available()


def sweeps_sweep() -> None:
    """The sweeper's part (studio.sweeping): sweeps the job queue never got are sent again, those
    whose worker died are failed (what they measured stays)."""
    jobs.jobs_sweep(RetrievalSweep)

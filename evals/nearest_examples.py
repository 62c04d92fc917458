"""Examples chosen per input: the cases most like an input, for a version whose
`example_source` asks for them (prompts/examples.py is the entry point; this is its case lookup,
registered there by evals/apps.py, since prompts/ may not import evals/).

The pool: approved cases of the version's prompt (any version of it) with an expected answer,
that the person the reply is for may see (shared, or their own: a case made private drops out),
from the train split or a saved selection's filters. Each case's input (prompts.examples.input_of)
is embedded once with the studio's embedder (the numpy twin the web process searches knowledge
with) and kept in CaseEmbedding: computed in the background after a case is saved (the `evals.*`
lane), or here at lookup for the few still missing. A lookup is one embed of the input and one
matrix product over the pool's vectors, which stay in a per-process cache until the pool changes.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.db.models import Count, Max

from prompts.examples import ExampleCase, ExampleSourceError, input_digest, input_of
from studio.celery import app
from studio.llm.numpy_embedder import EMBEDDING_MODEL, load_numpy_embedder

from .models import CaseEmbedding, CaseSelection, FailureCase
from .selectors import USED_STATUSES, apply_filters, cases_visible_to

log = logging.getLogger("evals")
# Cases without a vector embedded during one lookup at most (about 5 ms each on this CPU); the rest
# are skipped this time and embedded by the background task. A reply must not wait on a new pool.
MAX_EMBEDDED_PER_LOOKUP = 256
EMBED_BATCH = 32
CACHED_POOLS = 64  # pools kept in memory per process (person × source), least recently used out first
EMBED_TASK = "evals.embed_cases"


def text_digest(text: str) -> str:
    """Of the embedded text and the embedder: a new embedder or an edited input is embedded again."""
    return input_digest(f"{EMBEDDING_MODEL}\n{text}")


# --- the pool ---------------------------------------------------------------------------------


def pool_cases(version, *, user, pool_case_ids: list[int] | None = None):
    """The cases `version` chooses examples from for `user` (a queryset; `pool_case_ids`: those
    cases instead of the version's pool, still only approved ones the person may see)."""
    cases = cases_visible_to(user).filter(review=FailureCase.Review.APPROVED).exclude(expected="")
    if pool_case_ids is not None:
        return cases.filter(pk__in=list(pool_case_ids))
    origin = (version.example_source or {}).get("from") or {}
    cases = cases.filter(prompt_version__prompt_id=version.prompt_id)
    if origin.get("split"):
        return cases.filter(split=origin["split"], status__in=USED_STATUSES)
    if origin.get("selection"):
        return _selected(cases, origin["selection"])
    return cases.none()


def _selected(cases, selection_id: int):
    """The saved selection's filters over `cases` (the version's author chose them; whoever the reply
    is for still sees only what they may see). A deleted selection leaves nothing."""
    filters = CaseSelection.objects.filter(pk=selection_id).values_list("filters", flat=True).first()
    if filters is None:
        return cases.none()
    filters = {name: value for name, value in filters.items() if name != "selection"}
    cases = apply_filters(cases, filters)
    return cases if filters.get("status") else cases.filter(status__in=USED_STATUSES)


@dataclass
class PoolMatrix:
    ids: list[int]
    digests: list[str]
    expected: list[str]  # stripped, for balance
    cases: dict[int, ExampleCase]
    vectors: np.ndarray  # (N, 384) float32, unit rows


_cache: OrderedDict[tuple, tuple[tuple, PoolMatrix]] = OrderedDict()
_cache_lock = threading.Lock()


def _stamp(cases) -> tuple:
    """Changes when the pool does: a case added, removed, edited or given its vector."""
    found = cases.aggregate(n=Count("id"), latest=Max("updated_at"), vectors=Count("embedding"))
    return found["n"], found["latest"], found["vectors"]


def pool_matrix(version, *, user, pool_case_ids: list[int] | None = None) -> PoolMatrix:
    cases = pool_cases(version, user=user, pool_case_ids=pool_case_ids)
    key = (
        version.prompt_id,
        repr((version.example_source or {}).get("from")),
        getattr(user, "pk", None),
        tuple(sorted(pool_case_ids)) if pool_case_ids is not None else None,
    )
    stamp = _stamp(cases)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == stamp:
            _cache.move_to_end(key)
            return cached[1]
    matrix = _built(cases)
    with _cache_lock:
        _cache[key] = (_stamp(cases), matrix)  # after the vectors it stored, so the next lookup hits
        _cache.move_to_end(key)
        while len(_cache) > CACHED_POOLS:
            _cache.popitem(last=False)
    return matrix


def _built(cases) -> PoolMatrix:
    rows = list(
        cases.order_by("id").values_list(
            "id", "input_variables", "input_text", "expected", "embedding__digest", "embedding__vector"
        )
    )
    texts = {row[0]: input_of(row[1], row[2]) for row in rows}
    missing = [row[0] for row in rows if row[4] != text_digest(texts[row[0]]) and row[3].strip()]
    fresh = embeddings_store({case_id: texts[case_id] for case_id in missing[:MAX_EMBEDDED_PER_LOOKUP]})
    ids, digests, expected, vectors, found = [], [], [], [], {}
    for case_id, variables, text, answer, digest, vector in rows:
        if not answer.strip():
            continue
        if case_id in fresh:
            vector = fresh[case_id]
        elif digest == text_digest(texts[case_id]):
            vector = np.frombuffer(bytes(vector), dtype=np.float32)
        else:
            continue  # past this lookup's bound: the background task embeds it
        ids.append(case_id)
        digests.append(text_digest(texts[case_id]))
        expected.append(answer.strip())
        vectors.append(vector)
        found[case_id] = ExampleCase(id=case_id, input_variables=variables or {}, input_text=text, expected=answer)
    matrix = np.stack(vectors) if vectors else np.zeros((0, 384), dtype=np.float32)
    return PoolMatrix(ids=ids, digests=digests, expected=expected, cases=found, vectors=matrix)


# --- embeddings -------------------------------------------------------------------------------


def embeddings_store(texts: dict[int, str]) -> dict[int, np.ndarray]:
    """Embed these cases' inputs and keep the vectors (case id → unit vector)."""
    if not texts:
        return {}
    embedder = load_numpy_embedder()
    ids = list(texts)
    vectors = {}
    for start in range(0, len(ids), EMBED_BATCH):
        batch = ids[start : start + EMBED_BATCH]
        for case_id, vector in zip(batch, embedder.embed([texts[case_id] for case_id in batch])):
            vectors[case_id] = vector
    existing = set(CaseEmbedding.objects.filter(case_id__in=ids).values_list("case_id", flat=True))
    still_there = set(FailureCase.objects.filter(pk__in=ids).values_list("pk", flat=True))  # deleted meanwhile
    CaseEmbedding.objects.bulk_create(
        [
            CaseEmbedding(case_id=case_id, digest=text_digest(texts[case_id]), vector=vectors[case_id].tobytes())
            for case_id in ids
            if case_id not in existing and case_id in still_there
        ],
        ignore_conflicts=True,
    )
    for case_id in existing:
        CaseEmbedding.objects.filter(case_id=case_id).update(
            digest=text_digest(texts[case_id]), vector=vectors[case_id].tobytes()
        )
    return vectors


def embed_cases(case_ids: list[int]) -> int:
    """The background task's work: those of the cases that could be examples and lack an up-to-date
    vector get one. Returns how many were embedded."""
    rows = (
        FailureCase.objects.filter(pk__in=case_ids, prompt_version__isnull=False)
        .exclude(expected="")
        .values_list("id", "input_variables", "input_text", "embedding__digest")
    )
    texts = {case_id: input_of(variables, text) for case_id, variables, text, _ in rows}
    stale = {case_id: texts[case_id] for case_id, _, _, digest in rows if digest != text_digest(texts[case_id])}
    embeddings_store(stale)
    return len(stale)


_pending = threading.local()


def embedding_wanted(case_id: int) -> None:
    """A case was saved: embed it in the background once the transaction commits (one task for all
    the cases a transaction saved, an import's thousands included)."""
    pending = getattr(_pending, "ids", None)
    if pending is None:
        pending = _pending.ids = set()
    pending.add(case_id)
    transaction.on_commit(_dispatch_pending)


def _dispatch_pending() -> None:
    ids = sorted(getattr(_pending, "ids", None) or ())
    _pending.ids = set()  # ids of a transaction rolled back since ride along; the task skips them
    if not ids:
        return
    try:
        app.send_task(EMBED_TASK, (ids,), retry=False)
    except Exception:  # the broker is away: the next lookup embeds them itself
        log.warning("could not queue the embedding of %s cases", len(ids), exc_info=True)


# --- the provider prompts/examples.py asks ----------------------------------------------------


class NearestExamples:
    """prompts.examples.ExampleProvider over the failure cases."""

    def nearest(self, *, version, user, query: str, exclude_case_ids, pool_case_ids) -> list[ExampleCase]:
        source = version.example_source or {}
        if not query.strip() or not getattr(user, "is_authenticated", False):
            return []
        pool = pool_matrix(version, user=user, pool_case_ids=pool_case_ids)
        if not pool.ids:
            return []
        query_digest = text_digest(query)
        if query_digest in pool.digests:  # a case's own input (an evaluation): its vector is stored
            vector = pool.vectors[pool.digests.index(query_digest)]
        else:
            vector = load_numpy_embedder().embed([query])[0]
        similarity = pool.vectors @ vector  # (N,) cosine: unit rows
        excluded = set(exclude_case_ids)
        balance = source.get("balance")
        per_answer: Counter[str] = Counter()
        chosen = []
        for row in np.argsort(-similarity, kind="stable"):
            # Never the input itself: the case being answered, or any case with the same input.
            if pool.ids[row] in excluded or pool.digests[row] == query_digest:
                continue
            if balance and per_answer[pool.expected[row]] >= balance:
                continue
            chosen.append(pool.cases[pool.ids[row]])
            per_answer[pool.expected[row]] += 1
            if len(chosen) == source.get("k", 6):
                break
        return chosen[::-1]  # the most similar last, nearest to the question

    def cases(self, *, version, user, case_ids: list[int]) -> list[ExampleCase]:
        found = {
            case.pk: case
            for case in cases_visible_to(user)
            .filter(pk__in=case_ids, review=FailureCase.Review.APPROVED)
            .exclude(expected="")
        }
        return [
            ExampleCase(
                id=pk,
                input_variables=found[pk].input_variables or {},
                input_text=found[pk].input_text,
                expected=found[pk].expected,
            )
            for pk in case_ids
            if pk in found
        ]

    def check_selection(self, *, selection_id: int, prompt, user) -> None:
        field = "examples.from.selection"
        selection = CaseSelection.objects.filter(pk=selection_id, owner_id=getattr(user, "pk", None)).first()
        if selection is None:
            raise ExampleSourceError("there is no such saved selection of yours", field)
        cases = cases_visible_to(user).filter(review=FailureCase.Review.APPROVED).exclude(expected="")
        if prompt is not None:
            cases = cases.filter(prompt_version__prompt=prompt)
        if not _selected(cases, selection_id).exists():
            raise ExampleSourceError(
                f"the selection “{selection.name}” holds no approved case "
                f"{'of this prompt ' if prompt is not None else ''}with an expected answer",
                field,
            )

    def pool_size(self, *, version, user) -> int:
        return pool_cases(version, user=user).count()

    def selections_of(self, *, user) -> list[tuple[int, str]]:
        return list(CaseSelection.objects.filter(owner_id=getattr(user, "pk", None)).values_list("id", "name"))

"""Reads of knowledge bases, with who may see them: a base is seen by its owner, or by everyone
logged in when it is shared. Another person's private base is "not found", never "forbidden"
(its existence is private too), and its name is not shown to them (attached_bases_seen_by).
Also: the ingestion the job workers take next (fair between owners), and how an upload's
documents are doing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from django.db.models import Count, Min, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from studio.errors import NotFound
from studio.jobs import JobStatus

from .models import Document, IngestionJob, KnowledgeBase, RetrievalSweep, RetrievalTest

# How far back "served least recently" looks: the owners of the last this many ingestions started.
RECENT_STARTS = 200


def knowledge_bases_for(*, user) -> QuerySet[KnowledgeBase]:
    return KnowledgeBase.objects.filter(Q(owner=user) | Q(shared=True)).select_related("owner")


def knowledge_base_for(*, user, knowledge_base_id: int) -> KnowledgeBase:
    knowledge_base = knowledge_bases_for(user=user).filter(pk=knowledge_base_id).first()
    if knowledge_base is None:
        raise NotFound("There is no such knowledge base, or it is not shared with you.")
    return knowledge_base


def document_for(*, knowledge_base: KnowledgeBase, document_id: int) -> Document:
    document = knowledge_base.documents.select_related("ingestion").filter(pk=document_id).first()
    if document is None:
        raise NotFound("This knowledge base has no such document.")
    return document


def knowledge_bases_with_counts(*, user) -> QuerySet[KnowledgeBase]:
    """The list page's rows: each base with its documents ready and in all, and its searchable chunks
    (of ready documents), counted in the one query."""
    ready = Q(documents__status=Document.Status.READY)
    return knowledge_bases_for(user=user).annotate(
        documents_total=Count("documents"),
        documents_ready=Count("documents", filter=ready),
        chunks_total=Coalesce(Sum("documents__chunk_count", filter=ready), 0),
    )


def documents_of(*, knowledge_base: KnowledgeBase) -> QuerySet[Document]:
    """Newest first, with each one's ingestion job (its progress) in the same query."""
    return knowledge_base.documents.select_related("ingestion")


def attachable_for(*, user, query: str = "", limit: int = 12) -> tuple[list[KnowledgeBase], list[Document]]:
    """What a person may attach to a chat, matching `query` in its name: their knowledge bases and
    the shared ones, and the ready documents in those."""
    query = (query or "").strip()[:200]
    bases = knowledge_bases_for(user=user)
    documents = Document.objects.filter(knowledge_base__in=bases, status=Document.Status.READY).select_related(
        "knowledge_base"
    )
    if query:
        bases, documents = bases.filter(name__icontains=query), documents.filter(name__icontains=query)
    return list(bases.order_by("name", "id")[:limit]), list(documents.order_by("name", "id")[:limit])


def next_ingestion() -> int | None:
    """The queued ingestion (its document's id) a job worker should take next, fair between people:
    the owner with the fewest documents being ingested goes first; among equals the one served
    least recently (whose last ingestion started longest ago, or never among the last
    RECENT_STARTS); then that owner's oldest queued document. One person's thousand-file upload
    then alternates with another's single file instead of holding it for an hour (as chat's queue
    does for replies: chat.serving.queue.queued_in_serving_order). None when nothing is queued."""
    owner = "document__knowledge_base__owner"
    oldest_queued = dict(
        IngestionJob.objects.filter(status=JobStatus.QUEUED).order_by().values_list(owner).annotate(first=Min("pk"))
    )
    if len(oldest_queued) <= 1:
        return next(iter(oldest_queued.values()), None)
    ingesting = dict(
        IngestionJob.objects.filter(status=JobStatus.RUNNING, **{f"{owner}__in": oldest_queued})
        .order_by()
        .values_list(owner)
        .annotate(n=Count("pk"))
    )
    served_rank: dict[int, int] = {}  # 0: the owner of the ingestion started last
    recent = IngestionJob.objects.filter(started_at__isnull=False).order_by("-started_at", "-pk")
    for rank, owner_id in enumerate(recent.values_list(owner, flat=True)[:RECENT_STARTS]):
        served_rank.setdefault(owner_id, rank)
    chosen = min(
        oldest_queued,
        key=lambda owner_id: (
            ingesting.get(owner_id, 0),
            -served_rank.get(owner_id, RECENT_STARTS),
            oldest_queued[owner_id],
        ),
    )
    return oldest_queued[chosen]


# What a person who may not see a knowledge base reads in its place. A private base's name is its
# owner's to show: it can say what the base is about ("Layoffs 2025"); its passages never leave.
HIDDEN_BASE_NAME = "a knowledge base you cannot see"


def attached_bases_seen_by(*, user, attached) -> list[dict]:
    """A prompt version's attached bases ({"id", "name"} as the version stores them) as `user` may
    read them: {"id", "name", "hidden"}. A base they may see by its name now; one not in this
    studio (id None: an import that named a base found nowhere, nobody's secret) by the stored name;
    any other, whatever its name, as HIDDEN_BASE_NAME."""
    entries = [entry for entry in attached or [] if isinstance(entry, dict)]
    ids = [entry["id"] for entry in entries if isinstance(entry.get("id"), int)]
    visible = dict(knowledge_bases_for(user=user).filter(pk__in=ids).values_list("pk", "name")) if ids else {}
    seen = []
    for entry in entries:
        base_id = entry.get("id")
        if base_id is None:
            seen.append({"id": None, "name": entry.get("name") or "", "hidden": False})
        elif base_id in visible:
            seen.append({"id": base_id, "name": visible[base_id], "hidden": False})
        else:
            seen.append({"id": base_id, "name": HIDDEN_BASE_NAME, "hidden": True})
    return seen


@dataclass(frozen=True)
class UploadProgress:
    """How the documents one upload queued are doing: its notice says so until none is waiting."""

    document_ids: list[int]
    ready: int
    failed: int
    waiting: int  # queued or being indexed

    @property
    def total(self) -> int:
        return self.ready + self.failed + self.waiting

    @property
    def active(self) -> bool:
        return self.waiting > 0

    @property
    def id_ranges(self) -> str:
        """The ids as ranges ("12-40,45"): an upload of a thousand files still polls with a short URL."""
        ranges, ids = [], sorted(self.document_ids)
        for document_id in ids:
            if ranges and ranges[-1][1] == document_id - 1:
                ranges[-1][1] = document_id
            else:
                ranges.append([document_id, document_id])
        return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)

    @property
    def sentence(self) -> str:
        if not self.total:
            return ""
        documents = f"{self.total} document{'s' if self.total != 1 else ''}"
        if self.waiting == self.total:
            return f"{documents} queued."
        failed = f", {self.failed} failed (the list says why)" if self.failed else ""
        if self.waiting:
            return f"{documents}: {self.ready} ready{failed}, {self.waiting} still being indexed."
        if not self.failed:
            return f"{documents} ready." if self.total > 1 else "The document is ready."
        return f"{documents} done: {self.ready} ready{failed}."


def upload_progress(*, knowledge_base: KnowledgeBase, document_ids) -> UploadProgress:
    """The documents of `document_ids` in this base (one deleted meanwhile is no longer counted)."""
    document_ids = list(document_ids)
    statuses = (
        Counter(knowledge_base.documents.filter(pk__in=document_ids).values_list("status", flat=True))
        if document_ids
        else Counter()
    )
    return UploadProgress(
        document_ids=document_ids,
        ready=statuses[Document.Status.READY],
        failed=statuses[Document.Status.FAILED],
        waiting=statuses[Document.Status.QUEUED] + statuses[Document.Status.PROCESSING],
    )


def parse_id_ranges(text: str, *, limit: int = 1000) -> list[int]:
    """ "12-40,45" → [12, …, 40, 45], at most `limit` ids; anything else in it is left out."""
    ids: list[int] = []
    for part in text.split(",")[:limit]:
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or len(low) > 18 or len(high) > 18:
            continue
        low_id, high_id = int(low), int(high or low)
        ids.extend(range(low_id, min(high_id, low_id + limit - len(ids) - 1) + 1))
        if len(ids) >= limit:
            break
    return ids[:limit]


def retrieval_tests_of(*, knowledge_base: KnowledgeBase) -> QuerySet[RetrievalTest]:
    """Newest first, with whether a measurement job is at each (its progress) in the same query."""
    return knowledge_base.retrieval_tests.select_related("measurement")


def retrieval_test_for(*, knowledge_base: KnowledgeBase, test_id: int) -> RetrievalTest:
    """A test of this base (one of another base, whoever's, is not found here)."""
    test = knowledge_base.retrieval_tests.filter(pk=test_id).first()
    if test is None:
        raise NotFound("This knowledge base has no such retrieval test.")
    test.knowledge_base = knowledge_base
    return test


def sweeps_of(*, knowledge_base: KnowledgeBase) -> QuerySet[RetrievalSweep]:
    """Newest first."""
    return knowledge_base.sweeps.all()


def sweep_for(*, knowledge_base: KnowledgeBase, sweep_id: int) -> RetrievalSweep:
    """A sweep of this base (one of another base, whoever's, is not found here)."""
    found = knowledge_base.sweeps.select_related("test").filter(pk=sweep_id).first()
    if found is None:
        raise NotFound("This knowledge base has no such tuning sweep.")
    found.knowledge_base = knowledge_base
    return found

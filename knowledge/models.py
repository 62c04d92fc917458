"""Knowledge bases: documents people upload, cut into chunks, indexed by keyword and by meaning.

A knowledge base pins how it was indexed (embedding model, dimension, chunk size and overlap): a
later change of the KNOWLEDGE_CHUNK_* settings applies to the bases created after it, or to one
that is rebuilt. Each document is ingested by a job on the job workers (`IngestionJob`, one per
document: its own progress, cancel and failure, so a bad file fails alone). Chunks of a document
are searchable once the document is ready; the keyword index over their text lives beside the
table (knowledge/keyword_index.py), their vectors in the table itself.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from studio.jobs import JobRecord


class KnowledgeBase(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="knowledge_bases")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # Shared: everyone logged in sees and searches it; only its owner adds or removes documents.
    shared = models.BooleanField(default=False)
    # How its index was built, pinned when it was created.
    embedding_model = models.CharField(max_length=100)
    dimension = models.PositiveIntegerField()
    chunk_tokens = models.PositiveIntegerField()
    chunk_overlap = models.PositiveIntegerField()
    # Bumped in the same transaction as every change to what search reads (a document becoming
    # ready, leaving ready, being deleted, a rebuild switched over): each process's vector cache
    # compares it (vectors.py).
    chunks_version = models.PositiveBigIntegerField(default=0)
    # Chunks carry the generation of the index they belong to; search reads the active one. A
    # rebuild (services.knowledge_base_rebuild) writes the building one with its own settings while
    # the active one keeps answering, then switches over in one transaction.
    active_generation = models.PositiveIntegerField(default=0)
    building_generation = models.PositiveIntegerField(null=True, blank=True)  # None: no rebuild running
    building_chunk_tokens = models.PositiveIntegerField(null=True, blank=True)
    building_chunk_overlap = models.PositiveIntegerField(null=True, blank=True)
    # The embedder the building generation is embedded with when the rebuild changes it (a tuned
    # embedder "tuned:<id>", or back to the bundled one); "": the base's own. Pinned at the switch-over.
    building_embedding_model = models.CharField(max_length=100, blank=True)
    # How a search ranks what the index holds (knowledge/search.py): changed at any time, no rebuild.
    # fusion_weight: the vector ranking's share in hybrid fusion (0: keywords only, 1: vectors only).
    fusion_weight = models.FloatField(default=0.5)
    collapse_duplicates = models.BooleanField(default=True)  # near-duplicate passages shown once, "also in"
    rerank = models.BooleanField(default=False)  # the top candidates reordered by KNOWLEDGE_RERANKER_URL
    expand_query = models.BooleanField(default=False)  # rewrites of the question by a served model, fused
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name

    def visible_to(self, user) -> bool:
        return self.shared or self.owner_id == user.pk

    def chunks_changed(self) -> None:
        """Call inside the transaction that changes what search reads."""
        KnowledgeBase.objects.filter(pk=self.pk).update(chunks_version=F("chunks_version") + 1)

    def embedder_for(self, generation: int) -> str:
        """The embedder of a generation's chunks: the building one's may differ during a rebuild."""
        if generation == self.building_generation and self.building_embedding_model:
            return self.building_embedding_model
        return self.embedding_model

    @property
    def rebuilding(self) -> bool:
        return self.building_generation is not None

    def rebuild_progress(self) -> dict | None:
        """While a rebuild runs: its settings and its documents indexed again of those it waits for
        (every document but the failed ones; one uploaded meanwhile counts when it is done)."""
        if not self.rebuilding:
            return None
        counts = self.documents.exclude(status=Document.Status.FAILED).aggregate(
            total=models.Count("pk"), done=models.Count("pk", filter=Q(rebuilt_chunk_count__isnull=False))
        )
        return {
            "chunk_tokens": self.building_chunk_tokens,
            "chunk_overlap": self.building_chunk_overlap,
            "embedding_model": self.building_embedding_model or self.embedding_model,
            "done": counts["done"],
            "total": counts["total"],
        }


class Document(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"  # `stage` says which step: parsing, embedding
        READY = "ready"
        FAILED = "failed"  # `error` says why, for the person who uploaded it

    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    name = models.CharField(max_length=255)  # the uploaded file's name
    kind = models.CharField(max_length=16, blank=True)  # knowledge.parsing.KINDS
    content_type = models.CharField(max_length=100, blank=True)  # as the uploader declared it
    # sha256 of the file: the same content uploaded twice is one document. Blank for a file refused
    # before it was read (too large).
    content_hash = models.CharField(max_length=64, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    file = models.CharField(max_length=300, blank=True)  # under KNOWLEDGE_FILES_DIR
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=16, blank=True)
    error = models.TextField(blank=True)
    # What kind of failure (knowledge.parsing's codes, e.g. "too_many_elements", and the ones of
    # ingestion: "cancelled", "worker_lost", ...); blank while it has not failed. A failed
    # document's file is deleted (its row and reason stay); uploading the same file again retries it.
    error_code = models.CharField(max_length=32, blank=True)
    notes = models.JSONField(default=list, blank=True)  # e.g. "not UTF-8: read as Windows-1252"
    pages = models.PositiveIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)  # in the knowledge base's active generation
    # Its chunks in the building generation, once they are all stored (a rebuild switches over when
    # every ready document has them); None otherwise.
    rebuilt_chunk_count = models.PositiveIntegerField(null=True, blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["knowledge_base", "content_hash"],
                condition=~Q(content_hash=""),
                name="knowledge_document_unique_content",
            ),
        ]
        indexes = [models.Index(fields=["knowledge_base", "status"], name="knowledge_document_kb_status")]

    def __str__(self):
        return self.name

    @property
    def active(self) -> bool:
        """Still being ingested: its page polls until none is."""
        return self.status in (self.Status.QUEUED, self.Status.PROCESSING)

    @property
    def status_label(self) -> str:
        """What a person reads: queued, parsing, embedding, ready or failed."""
        return (self.stage or "processing") if self.status == self.Status.PROCESSING else self.status

    def to_dict(self) -> dict:
        """What the API answers about a document."""
        job = getattr(self, "ingestion", None)
        return {
            "id": self.pk,
            "name": self.name,
            "status": self.status,
            "stage": self.stage,
            "chunks": self.chunk_count,
            "pages": self.pages,
            "error": self.error,
            "error_code": self.error_code,
            "notes": self.notes,
            "size": self.size,
            "kind": self.kind,
            "progress": {"done": job.done, "total": job.total} if job is not None else None,
        }


class IngestionJob(JobRecord):
    """Parsing, chunking and embedding one document on the job workers. Its key is the document's:
    `dispatch(IngestionJob, document.pk)`. done/total count the chunks embedded."""

    TASK = "knowledge.ingest"
    document = models.OneToOneField(Document, on_delete=models.CASCADE, primary_key=True, related_name="ingestion")
    # Deliveries that started it: a job whose worker died is sent again (resumed) a few times, then failed.
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        # The job workers' next pick (selectors.next_ingestion): queued ones, and who was served last.
        indexes = [
            models.Index(fields=["status"], name="knowledge_ingestion_status"),
            models.Index(fields=["started_at"], name="knowledge_ingestion_started"),
        ]


class ChunkQuerySet(models.QuerySet):
    def active(self) -> ChunkQuerySet:
        """The chunks search reads: those of their knowledge base's active generation (during a
        rebuild a document also has chunks of the building one)."""
        return self.filter(generation=F("knowledge_base__active_generation"))


class Chunk(models.Model):
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()  # its place in the document, from 0
    text = models.TextField()
    page = models.PositiveIntegerField(null=True, blank=True)
    heading = models.CharField(max_length=500, blank=True)  # the trail of headings above it: "Setup › Install"
    start = models.PositiveIntegerField()  # character offsets in the document's text (knowledge/chunking.py)
    end = models.PositiveIntegerField()
    token_count = models.PositiveIntegerField()
    embedding = models.BinaryField()  # float32, little-endian, the knowledge base's dimension
    # Which index it belongs to (KnowledgeBase.active_generation, or building_generation during a rebuild).
    generation = models.PositiveIntegerField(default=0)

    objects = ChunkQuerySet.as_manager()

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["document", "generation", "ordinal"], name="knowledge_chunk_unique_ordinal")
        ]
        indexes = [models.Index(fields=["knowledge_base", "generation", "id"], name="knowledge_chunk_kb")]

    def __str__(self):
        return f"{self.document_id}#{self.ordinal}"


class RetrievalTest(models.Model):
    """Questions with their right passages, for measuring how well a knowledge base's search finds
    them (knowledge/retrieval_tests.py). Its last measurement is kept with what it was measured
    against (`measured_version`), so a page knows when the figures no longer hold: after a rebuild,
    a document added, or a ranking setting changed."""

    class Source(models.TextChoices):
        IMPORT = "import"  # a file or the API's list of questions
        CASES = "cases"  # failure cases whose passages a person judged

    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="retrieval_tests")
    name = models.CharField(max_length=200)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.IMPORT)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    question_count = models.PositiveIntegerField(default=0)  # its questions never change once stored
    # The last measurement's figures (retrieval_tests.Figures); {}: never measured.
    figures = models.JSONField(default=dict, blank=True)
    measured_at = models.DateTimeField(null=True, blank=True)
    # What that measurement searched: the base's chunks_version and its index and ranking settings
    # (retrieval_tests.version_of); it is stale when the base's differ.
    measured_version = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.name


class RetrievalQuestion(models.Model):
    """One question of a retrieval test, with its right passages and, once measured, where search
    put the first of them."""

    test = models.ForeignKey(RetrievalTest, on_delete=models.CASCADE, related_name="questions")
    ordinal = models.PositiveIntegerField()  # its place in the test, from 0
    question = models.TextField()  # at most search.MAX_QUERY_CHARS
    # [{"text"} or {"document", "page"}]: any of them found counts (retrieval_tests.passage_matches).
    passages = models.JSONField(default=list)
    # The last measurement: the rank (1-10) of the first hit holding a right passage, None when none
    # of the top 10 does; whether no passage of the base matches any of them at all; the hit that
    # matched ({"chunk", "document", "page"}, {} when none).
    rank = models.PositiveSmallIntegerField(null=True, blank=True)
    passage_not_in_base = models.BooleanField(default=False)
    matched = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["test_id", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["test", "ordinal"], name="knowledge_retrieval_question_ordinal")]

    def __str__(self):
        return f"{self.test_id}#{self.ordinal}"


class RetrievalMeasurement(JobRecord):
    """A retrieval test measured by a job on the knowledge lane (larger tests; and every test of a
    base after its rebuild switches over). Its key is the test's: `dispatch(RetrievalMeasurement,
    test.pk)`. done/total count the questions searched."""

    TASK = "knowledge.measure_retrieval_test"
    test = models.OneToOneField(RetrievalTest, on_delete=models.CASCADE, primary_key=True, related_name="measurement")
    # What it measures against (retrieval_tests.version_of, when it was queued): a job that ended for
    # this version is not queued again for it (one that failed says why instead of looping).
    version = models.JSONField(default=dict, blank=True)


class RetrievalSweep(JobRecord):
    """The tuning sweep (knowledge/sweep.py): settings of a base (chunk size and overlap, fusion
    weight, near-duplicate collapse, reranking) each measured against one of its retrieval tests on
    an in-memory twin of its index, within a budget of minutes, on the knowledge lane. Its key is
    its own id: `dispatch(RetrievalSweep, sweep.pk)`. done/total count the settings measured."""

    TASK = "knowledge.retrieval_sweep"
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="sweeps")
    test = models.ForeignKey(RetrievalTest, on_delete=models.CASCADE, related_name="sweeps")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    # The grid asked, checked (sweep.clean_grid): {"chunk": [[tokens, overlap]], "fusion_weight": [...],
    # "collapse_duplicates": [...], "rerank": [...], "k": [...]}.
    grid = models.JSONField(default=dict)
    minutes = models.PositiveSmallIntegerField(default=20)  # its budget: no setting is started past it
    # One row per setting, in the grid's order (sweep.SweepRow): its settings, status and figures.
    rows = models.JSONField(default=list)
    best_row = models.PositiveIntegerField(null=True, blank=True)  # index in rows: recall@5, then MRR@10, then p95
    applied_row = models.PositiveIntegerField(null=True, blank=True)  # the row last applied to the base

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"sweep #{self.pk}"

    @property
    def best(self) -> dict | None:
        return self.rows[self.best_row] if self.best_row is not None and self.best_row < len(self.rows) else None

    @property
    def applied(self) -> bool:
        return self.applied_row is not None

"""Failure cases (the four columns: prompt, input, actual, expected), saved selections of them,
and evaluations that measure a prompt version and a model against them."""

import hashlib
import json

from django.conf import settings
from django.db import models
from django.urls import reverse

from studio.jobs import JobRecord, JobStatus

# The one default of a new case's sharing, and the sentence every form that makes cases shows.
NEW_CASE_SHARED = False
NEW_CASE_SHARING_NOTE = "New cases are private (only you see them) until you tick “Share with the team”."


class Tag(models.Model):
    name = models.CharField(max_length=60, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class FailureCase(models.Model):
    """A case where the model got it wrong, with the answer a person expected.

    Visibility: a *shared* case is team data, seen by every logged-in user (like prompts); a
    case that is not shared is seen by its creator alone, staff included. Every new case starts
    private (NEW_CASE_SHARED), however it is made (flagged from a chat or a prompt, written, imported,
    posted to the API), so nothing a person wrote reaches the team before they choose; each form
    says so beside its "Share with the team" box, and the API takes `"shared": true`.
    """

    class Source(models.TextChoices):
        CHAT = "chat"
        PLAYGROUND = "playground"
        API = "api"
        MANUAL = "manual"
        IMPORT = "import"
        PRODUCTION = "production"  # a reviewer's correction of a live reply (the review queue)

    class Split(models.TextChoices):
        TRAIN = "train"
        EVAL = "eval"

    class Status(models.TextChoices):
        OPEN = "open"
        FIXED = "fixed"
        WONT_FIX = "wontfix", "won't fix"

    class Review(models.TextChoices):
        APPROVED = "approved"  # used by exports, evaluations and fine-tunes
        PENDING = "pending"  # waiting for a reviewer (only with FAILURE_CASE_REVIEW on)

    # Column 1, the prompt: a version, or none for plain chat.
    prompt_version = models.ForeignKey(
        "prompts.PromptVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="failure_cases"
    )
    # Column 2, the input: the variables' values (a prompt's template) or the user's message,
    # plus the conversation context sent before it (messages; few-shot examples are on the version).
    input_variables = models.JSONField(default=dict, blank=True)
    input_text = models.TextField(blank=True)
    context = models.JSONField(default=list, blank=True)
    actual = models.TextField(blank=True)  # column 3: what the model answered
    expected = models.TextField()  # column 4: what a person expected
    # Duplicates are found on (prompt version, input): a digest of the input, indexed.
    input_digest = models.CharField(max_length=64, db_index=True, editable=False)
    tags = models.ManyToManyField(Tag, blank=True, related_name="cases")
    note = models.TextField(blank=True)
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.TRAIN)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    review = models.CharField(max_length=10, choices=Review.choices, default=Review.APPROVED)
    source = models.CharField(max_length=12, choices=Source.choices, default=Source.MANUAL)
    model_name = models.CharField(max_length=200, blank=True)  # the model that wrote `actual`
    # A reply that used retrieval: the numbered sources it read (knowledge.retrieval's sources, each
    # with its chunk id and text), kept when it is flagged.
    retrieved = models.JSONField(default=list, blank=True)
    # Which passages were right: {"right": [{"chunk", "document", "page", "text"}, ...] (any of those
    # that identify one), "not_in_kb": true when the knowledge base lacks the answer}. {}: not judged.
    retrieval_judgment = models.JSONField(default=dict, blank=True)
    shared = models.BooleanField(default=NEW_CASE_SHARED)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="failure_cases")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Where it was flagged; cleared when that conversation is deleted (the case keeps its copy).
    source_message = models.ForeignKey(
        "chat.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source_conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["prompt_version", "input_digest"]), models.Index(fields=["split", "status"])]

    def __str__(self):
        return f"case #{self.pk}"

    def get_absolute_url(self):
        return reverse("evals:case", args=[self.pk])

    def save(self, *args, **kwargs):
        self.input_digest = input_digest(self.input_variables, self.input_text)
        super().save(*args, **kwargs)

    @property
    def prompt(self):
        return self.prompt_version.prompt if self.prompt_version_id else None

    @property
    def input_display(self) -> str:
        if self.input_variables:
            return "\n".join(f"{name} = {value}" for name, value in self.input_variables.items())
        return self.input_text


def input_digest(variables: dict, text: str) -> str:
    canonical = json.dumps({"variables": variables or {}, "text": text or ""}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class CaseEmbedding(models.Model):
    """A case's input as a vector, for choosing the examples most like an input
    (evals/nearest_examples.py): computed once per case, again when its input changes (`digest`:
    of the embedded text and the embedder that embedded it)."""

    case = models.OneToOneField(FailureCase, on_delete=models.CASCADE, related_name="embedding")
    digest = models.CharField(max_length=64)
    vector = models.BinaryField()  # float32, unit length

    def __str__(self):
        return f"embedding of case #{self.case_id}"


class CaseSelection(models.Model):
    """A named filter over the cases: what export, evaluation and fine-tuning take as data."""

    name = models.CharField(max_length=100)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="case_selections")
    filters = models.JSONField(default=dict)  # the curation page's filter fields (selectors.FILTERS)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="one_selection_name_per_owner")]

    def __str__(self):
        return self.name


class Evaluation(JobRecord):
    """One prompt version with one model over a set of cases; per case, the output and its scores."""

    TASK = "evals.run_evaluation"

    prompt_version = models.ForeignKey("prompts.PromptVersion", on_delete=models.PROTECT, related_name="evaluations")
    model_name = models.CharField(max_length=200)
    case_filters = models.JSONField(default=dict)  # what chose the cases (kept, for the record)
    case_ids = models.JSONField(default=list)  # the cases chosen when it was started: a rerun measures the same
    scorers = models.JSONField(default=list)  # [{"type", "threshold", ...}] (evals.scorers)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="evaluations")
    shared = models.BooleanField(default=True)  # every case it ran on is shared: the team may see it
    passed = models.PositiveIntegerField(default=0)
    # The model's failures, not the prompt's: replies asked again because the model worker writing
    # them stopped (EVAL_CASE_RETRIES a case), and cases the model never answered (errors: counted
    # in `done`, left out of the pass rate).
    retried = models.PositiveIntegerField(default=0)
    errored = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"evaluation #{self.pk}"

    def get_absolute_url(self):
        return reverse("evals:evaluation", args=[self.pk])

    @property
    def scored(self) -> int:
        """The cases the pass rate is over: those done, less the ones the model never answered."""
        return max(self.done - self.errored, 0)

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.scored if self.scored else None

    @property
    def model_errors_note(self) -> str:
        """What the pass rate leaves out or took twice, in words ("" when nothing happened)."""
        parts = []
        if self.retried:
            one = self.retried == 1
            parts.append(
                f"{self.retried} repl{'y was' if one else 'ies were'} asked again after the model worker "
                f"writing {'it' if one else 'them'} stopped"
            )
        if self.errored:
            parts.append(
                f"{self.errored} case{' was' if self.errored == 1 else 's were'} not answered by the "
                "model (errors, left out of the pass rate)"
            )
        return "; ".join(parts) + "." if parts else ""


class EvaluationResult(models.Model):
    class Verdict(models.TextChoices):
        PASS = "pass"
        FAIL = "fail"

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(FailureCase, on_delete=models.CASCADE, related_name="results")
    output = models.TextField(blank=True)
    scores = models.JSONField(default=dict)  # scorer type → number
    # Scorer type → why it scored so, where a scorer says (tool_call: "called get_time, expected
    # get_weather"; a scorer that did not apply to the case: why, and it is absent from `scores`).
    reasons = models.JSONField(default=dict, blank=True)
    scorer_passed = models.BooleanField(default=False)  # every scorer passed its threshold
    passed = models.BooleanField(default=False)  # the verdict if a person gave one, else scorer_passed
    verdict = models.CharField(max_length=4, choices=Verdict.choices, blank=True)
    verdict_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error = models.TextField(blank=True)
    # Set when the model gave no answer (chat.models.Message.ErrorCode: its worker was lost past its
    # retries, the model failed on it): an error, not a fail; blank for an answer that was scored.
    error_code = models.CharField(max_length=16, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # The passages retrieved for it, best first (at least the top 10, for MRR@10): chunk, document,
    # page, text, score. The first k of them were in what the model read.
    retrieved = models.JSONField(default=list, blank=True)
    # The cases the version chose as its few-shot examples for this one (examples chosen per input,
    # prompts/examples.py), in the order the model read them; never the case itself. []: none chosen.
    example_cases = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["evaluation", "case"], name="one_result_per_case")]

    @property
    def outcome(self) -> str:
        """pass, fail, or error: the model gave no answer (and no person gave a verdict since)."""
        if self.error_code and not self.verdict:
            return "error"
        return "pass" if self.passed else "fail"


class ImportDraft(JobRecord):
    """An uploaded CSV/JSONL file between its upload and its import: the mapping step checks the
    rows it shows, page by page; the import is a job on the job workers that checks every row
    once and imports them (nothing is a case until then). `outcome` says what it did."""

    TASK = "evals.import_cases"
    # Blank until the person starts the import (a draft being mapped is no job yet).
    status = models.CharField(max_length=16, choices=JobStatus.choices, blank=True, default="")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    filename = models.CharField(max_length=200)
    columns = models.JSONField(default=list)
    rows = models.JSONField(default=list)
    # What the person chose when they started the import (kept, so a refused import shows them again).
    mapping = models.JSONField(default=dict)  # field → column
    fixed = models.JSONField(default=dict)  # prompt, version, split for every row
    options = models.JSONField(default=dict)  # only_valid, eval_share (0-1)
    # {"imported", "duplicates", "refused", "errors": [[row, column, message]], "duplicate_rows": [[row, why]]}
    outcome = models.JSONField(default=dict)

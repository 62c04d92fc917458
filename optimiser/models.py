"""An optimisation: a search over candidate versions of a prompt version, each scored on the
cases it was given (a search part, then the best on a check part), and the best proposed as a
draft version the person can save."""

from django.conf import settings
from django.db import models
from django.urls import reverse

from studio.jobs import JobRecord


class Optimisation(JobRecord):
    TASK = "optimiser.run_optimisation"

    prompt_version = models.ForeignKey("prompts.PromptVersion", on_delete=models.PROTECT, related_name="+")
    # What it was given: {"split": "train"} or {"selection": id}; the cases it chose then (kept, so
    # the record says what it searched on even after the cases change).
    source = models.JSONField(default=dict)
    case_ids = models.JSONField(default=list)
    search_case_ids = models.JSONField(default=list)  # 2/3, shuffled with `seed`
    check_case_ids = models.JSONField(default=list)  # 1/3: only the best few by search score meet these
    seed = models.PositiveIntegerField(default=0)
    scorers = models.JSONField(default=list)  # evals.scorers.clean_scorers
    budget = models.JSONField(default=dict)  # {"cases": N} or {"minutes": M}
    model_name = models.CharField(max_length=200)  # the model the candidates are measured with
    rewrite_model = models.CharField(max_length=200)  # the model that proposes instruction rewrites
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    best = models.ForeignKey("optimiser.Candidate", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    saved_version = models.ForeignKey(
        "prompts.PromptVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    held_out_evaluation = models.ForeignKey(
        "evals.Evaluation", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"optimisation #{self.pk}"

    def get_absolute_url(self):
        return reverse("optimiser:optimisation", args=[self.pk])


class Candidate(models.Model):
    """One change to the base version, and how it scored. `changes` holds the fields that differ
    from the base (instructions, examples: a list or a nearest-examples source, output_format)."""

    class Kind(models.TextChoices):
        BASE = "base"
        NEAREST = "nearest"  # examples chosen per input
        FIXED = "fixed"  # a fixed set chosen for coverage
        REWRITE = "rewrite"  # instructions rewritten by a model
        FORMAT = "format"  # output format free instead of the version's schema
        COMBINED = "combined"  # the best instructions with the best examples

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SCORED = "scored"
        REFUSED = "refused"  # `reason` says why (an empty or enormous rewrite)
        SKIPPED = "skipped"  # the budget ran out, or it would equal another candidate

    optimisation = models.ForeignKey(Optimisation, on_delete=models.CASCADE, related_name="candidates")
    position = models.PositiveIntegerField()  # 1-based, the order it was tried in
    kind = models.CharField(max_length=10, choices=Kind.choices)
    description = models.CharField(max_length=300)  # what changed, in words
    changes = models.JSONField(default=dict)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    reason = models.TextField(blank=True)
    search_passed = models.PositiveIntegerField(default=0)
    search_scored = models.PositiveIntegerField(default=0)  # answered and scored (errors left out)
    check_passed = models.PositiveIntegerField(default=0)
    check_scored = models.PositiveIntegerField(default=0)
    checked = models.BooleanField(default=False)  # among the best by search score: scored on the check part
    tokens = models.PositiveIntegerField(default=0)  # prompt + completion tokens over its search part
    # case id → passed, per part: which cases it failed (the base's failures feed later candidates).
    outcomes = models.JSONField(default=dict)

    class Meta:
        ordering = ["optimisation", "position"]
        constraints = [models.UniqueConstraint(fields=["optimisation", "position"], name="one_candidate_per_position")]

    def __str__(self):
        return f"candidate {self.position}: {self.description}"

    @property
    def search_score(self) -> float | None:
        return self.search_passed / self.search_scored if self.search_scored else None

    @property
    def check_score(self) -> float | None:
        return self.check_passed / self.check_scored if self.checked and self.check_scored else None

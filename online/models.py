"""Online evaluation: rules that sample a prompt's live replies and score them in the background.

A rule names a prompt and which of its replies it follows (a label, or a version), the share it
samples and its reference-free scorers. Each reply a rule samples is an `OnlineSample`, a job of
the evaluations lane (its row is the truth: queued, running, finished; studio/jobs.py), and each
of its scorers leaves an `OnlineScore`: a value, or an error with its reason (never a silent 0).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from studio.jobs import JobRecord

MAX_RULES_PER_PROMPT = 50  # counted before a rule is stored (POST answers 400 naming the bound)


class OnlineRule(models.Model):
    prompt = models.ForeignKey("prompts.Prompt", on_delete=models.CASCADE, related_name="online_rules")
    # Which replies it follows: those asked under `label`, or every reply of `version` (exactly one).
    label = models.CharField(max_length=40, blank=True)
    version = models.ForeignKey(
        "prompts.PromptVersion", on_delete=models.CASCADE, null=True, blank=True, related_name="online_rules"
    )
    sample_rate = models.FloatField()  # 0-1: the share of its replies scored (0 never, 1 all)
    # Checked scorer settings (online.scorers.clean_scorers): [{"type", "name", ...params}].
    scorers = models.JSONField(default=list)
    # A reply with a score below this goes to the review queue (review listens to reply_scored).
    review_below = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["prompt", "active"])]
        constraints = [
            models.CheckConstraint(
                condition=(Q(version__isnull=True) & ~Q(label="")) | (Q(version__isnull=False) & Q(label="")),
                name="online_rule_label_or_version",
            ),
            models.CheckConstraint(
                condition=Q(sample_rate__gte=0) & Q(sample_rate__lte=1), name="online_rule_sample_rate_0_1"
            ),
        ]

    def __str__(self):
        return f"{self.prompt_id} {self.follows}"

    def get_absolute_url(self):
        return reverse("online:rule", args=[self.pk])

    @property
    def follows(self) -> str:
        """What it follows, as people read it: `@production` or `v3`."""
        return f"@{self.label}" if self.label else f"v{self.version.number}"


class OnlineSample(JobRecord):
    """One reply a rule sampled: scored by a job worker of the evaluations lane (its judge asked of
    the model workers' background lane). One per (rule, reply): a reply finished twice (a retried
    signal) is not scored twice."""

    TASK = "online.score_sample"

    rule = models.ForeignKey(OnlineRule, on_delete=models.CASCADE, related_name="samples")
    message = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["rule", "message"], name="one_sample_per_rule_and_reply")]
        indexes = [
            models.Index(fields=["rule", "status", "-id"]),
            models.Index(fields=["status", "dispatched_at"]),
        ]


def judge_key(sample_id: int) -> str:
    """The job name of a sample's judge conversations (evals.runner.answers_from_model_workers)."""
    return f"online:{sample_id}"


class OnlineScore(models.Model):
    class Status(models.TextChoices):
        SCORED = "scored"
        ERROR = "error"  # `reason` says why; `value` is null and counts in no mean

    rule = models.ForeignKey(OnlineRule, on_delete=models.CASCADE, related_name="scores")
    message = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="+")
    scorer = models.CharField(max_length=40)  # the scorer's name in its rule
    value = models.FloatField(null=True, blank=True)  # 0-1
    status = models.CharField(max_length=8, choices=Status.choices)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "message", "scorer"], name="one_score_per_rule_reply_and_scorer")
        ]
        indexes = [models.Index(fields=["rule", "created_at"])]

    def __str__(self):
        return f"{self.scorer}={self.value} ({self.status})"


class OnlineScoreDay(models.Model):
    """A rule's scores per scorer and day, kept as they are stored (online.scoring), so its page reads
    a row a day and scorer however many replies it scored."""

    rule = models.ForeignKey(OnlineRule, on_delete=models.CASCADE, related_name="days")
    scorer = models.CharField(max_length=40)
    day = models.DateField()  # in the studio's time zone (TIME_ZONE)
    total = models.FloatField(default=0.0)  # the sum of its values: mean = total / scored
    scored = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["day", "scorer"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "scorer", "day"], name="one_online_day_per_rule_and_scorer")
        ]

    @property
    def mean(self) -> float | None:
        return self.total / self.scored if self.scored else None

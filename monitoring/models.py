"""Monitoring keeps aggregates as replies happen (rollups), never scanning messages to answer.

A ReplyRollup row sums the production replies of one prompt that share a version, label, variant,
model and the UTC hour they were asked in. Each counted reply has a CountedReply row saying what it
added, so that a reply that changes (a thumbs changed, flagged, continued after it was cut, scored
online) moves the sums by the difference, once, whatever the order of the signals (services).
"""

from datetime import UTC, date, datetime

from django.db import models

from .histogram import BINS

LATENCY_BINS = [f"latency_{index:02d}" for index in range(BINS)]
TTFT_BINS = [f"ttft_{index:02d}" for index in range(BINS)]
# The rollup's summed columns (services add to them, selectors sum them over a window).
COUNT_COLUMNS = [
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "tokens_per_s_sum",
    "tokens_per_s_count",
    "feedback_up",
    "feedback_down",
    "flagged",
    "format_valid",
    "format_invalid",
    "retrieved",
    "nothing_found",
]
SUMMED_COLUMNS = COUNT_COLUMNS + LATENCY_BINS + TTFT_BINS


def _count(**kwargs):
    # db_default: the upsert (services.rollup_add) inserts only the columns it adds to.
    return models.BigIntegerField(default=0, db_default=0, **kwargs)


class ReplyRollup(models.Model):
    """The production replies of a prompt in one hour, for one version, label, variant and model."""

    prompt = models.ForeignKey("prompts.Prompt", on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()  # the version's number (kept if the version goes)
    # The label the request named (`prompt:<slug>@staging`), or the one `prompt:<slug>` resolved to;
    # "" for chats and playground runs from a version (they name no label).
    label = models.CharField(max_length=40, blank=True)
    variant = models.CharField(max_length=64, blank=True)  # the A/B split's variant (Message.variant)
    model_name = models.CharField(max_length=200, blank=True)  # the model that wrote the replies
    hour = models.DateTimeField()  # the start of the UTC hour the replies were asked in
    # Its UTC day, kept beside it: a long window's daily series groups by a column, not by a
    # function of `hour` (SQLite runs Django's date functions in Python, row by row).
    day = models.DateField()

    requests = _count()  # replies that ended: complete, stopped or failed
    errors = _count()  # failed ones (by code: RollupTally ERROR)
    prompt_tokens = _count()
    completion_tokens = _count()
    tokens_per_s_sum = models.FloatField(default=0, db_default=0)  # over the replies that report a speed
    tokens_per_s_count = _count()
    feedback_up = _count()
    feedback_down = _count()
    flagged = _count()  # flagged as failure cases
    # Replies under an output format: decoded to its end (valid), or failed on it or cut by the
    # maximum tokens before the format was complete (invalid).
    format_valid = _count()
    format_invalid = _count()
    retrieved = _count()  # replies that searched knowledge
    nothing_found = _count()  # ... and no passage passed (the retrieval record's nothing_passed)

    class Meta:
        constraints = [
            # The upsert's conflict target: concurrent writers add to one row.
            models.UniqueConstraint(
                fields=["prompt", "version", "label", "variant", "model_name", "hour"], name="one_rollup_per_key"
            )
        ]
        indexes = [models.Index(fields=["prompt", "hour"], name="rollup_prompt_hour")]

    def __str__(self):
        return f"{self.prompt_id} v{self.version} {self.label or '-'} {self.hour:%Y-%m-%d %H}:00"

    @staticmethod
    def day_of(hour: datetime) -> date:
        return hour.astimezone(UTC).date()

    def save(self, *args, **kwargs):
        if self.day is None and self.hour is not None:
            self.day = self.day_of(self.hour)
        super().save(*args, **kwargs)


# One column per histogram bin: a window's percentiles are one SUM per column over its rollup rows
# (a few thousand for a 90-day window), where a row per bin would multiply the rows summed by ~30.
for _name in LATENCY_BINS + TTFT_BINS:
    ReplyRollup.add_to_class(_name, _count())


class RollupTally(models.Model):
    """The open-ended figures of a rollup: errors by code, online scores (sum and count) by scorer."""

    class Kind(models.TextChoices):
        ERROR = "error"  # name: the reply's error code
        SCORE = "score"  # name: the scorer; total: the scores' sum
        SCORE_ERROR = "score_error"  # name: the scorer, which could not score (never counted as 0)

    rollup = models.ForeignKey(ReplyRollup, on_delete=models.CASCADE, related_name="tallies")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=100)
    count = _count()
    total = models.FloatField(default=0, db_default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rollup", "kind", "name"], name="one_tally_per_name")]

    def __str__(self):
        return f"{self.kind} {self.name}: {self.count}"


class CountedReply(models.Model):
    """What one reply added to its rollup: `figures` maps a rollup column, or a tally as
    `kind.field:name` (`error.count:model_failed`, `score.total:judge`), to the amount added."""

    message = models.OneToOneField("chat.Message", on_delete=models.CASCADE, primary_key=True, related_name="+")
    rollup = models.ForeignKey(ReplyRollup, on_delete=models.CASCADE, related_name="+")
    figures = models.JSONField(default=dict)

    def __str__(self):
        return f"reply {self.message_id} in rollup {self.rollup_id}"

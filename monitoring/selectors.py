"""Reads of the rollups: a prompt's figures over a window, whole, per version, label, variant and
model, and over time. Three queries whatever the traffic: the rollups grouped by version, label,
variant and model (summed in SQL, folded here), their tallies likewise, and the series by hour or day.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from django.db.models import Sum
from django.utils import timezone

from prompts import selectors as prompt_selectors
from prompts.models import Prompt
from studio.errors import StudioError
from studio.input_checks import whole_number_or_none

from .histogram import percentile_ms
from .models import LATENCY_BINS, SUMMED_COLUMNS, TTFT_BINS, ReplyRollup, RollupTally

DEFAULT_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=366)
DAILY_AFTER = timedelta(days=7)  # a longer window's series has a point a day, else one an hour
FILTERS = {"label": "label", "version": "version", "model": "model_name", "variant": "variant"}
GROUPS = {"by_version": "version", "by_label": "label", "by_variant": "variant", "by_model": "model_name"}
SERIES_COLUMNS = ["requests", "errors", "feedback_up", "feedback_down", "flagged", *LATENCY_BINS, *TTFT_BINS]
ISO_EXAMPLE = "2026-12-01T00:00:00Z"


def prompt_for_monitoring(user, slug: str) -> Prompt | None:
    """A prompt's traffic is its owner's, its editors' and staff's to see; None for anyone else (as
    for a prompt that does not exist)."""
    prompt = prompt_selectors.prompt_by_slug(slug)
    return prompt if prompt is not None and prompt.can_edit(user) else None


@dataclass(frozen=True)
class Window:
    """Whole UTC hours: rollups are kept per hour, so `since` is the start of its hour."""

    since: datetime
    until: datetime

    @property
    def bucket(self) -> str:
        # An hour of slack: a 7-day window asked at 15:30 starts at 15:00 seven days before.
        return "day" if self.until - self.since > DAILY_AFTER + timedelta(hours=1) else "hour"

    def buckets(self) -> list[datetime]:
        step = timedelta(days=1) if self.bucket == "day" else timedelta(hours=1)
        moment = self.since.replace(hour=0) if self.bucket == "day" else self.since
        starts = []
        while moment < self.until:
            starts.append(moment)
            moment += step
        return starts


def _moment(text: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise StudioError(f"not an ISO 8601 time (e.g. {ISO_EXAMPLE}).", field) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without its zone is UTC, as the figures are
    return moment.astimezone(UTC)


def clean_window(
    since: str | None, until: str | None, *, length: timedelta = DEFAULT_WINDOW, now: datetime | None = None
) -> Window:
    """The window asked for: `until` (default now) and `since` (default `length`, 7 days, before
    it), at most 366 days long; a 400 names the field."""
    end = _moment(until, "until") if until else (now or timezone.now()).astimezone(UTC)
    start = _moment(since, "since") if since else end - length
    if start >= end:
        raise StudioError("must be before until.", "since")
    if end - start > MAX_WINDOW:
        raise StudioError(f"a window is at most {MAX_WINDOW.days} days long.", "since")
    return Window(since=start.replace(minute=0, second=0, microsecond=0), until=end)


def clean_filters(query) -> dict:
    """label, version, model, variant from a query string (empty ones left out)."""
    filters = {}
    for name, column in FILTERS.items():
        value = (query.get(name) or "").strip()
        if not value:
            continue
        if name == "version":
            number = whole_number_or_none(value, high=2**31 - 1)
            if number is None or number < 1:
                raise StudioError("a version number (1, 2, ...).", "version")
            filters[column] = number
        elif len(value) > 200:
            raise StudioError("at most 200 characters.", name)
        else:
            filters[column] = value
    return filters


def filter_choices(prompt: Prompt) -> dict[str, list]:
    """The versions, labels, models and variants a prompt's rollups hold (the page's filters)."""
    rollups = ReplyRollup.objects.filter(prompt=prompt).order_by()
    return {
        name: sorted(value for value in rollups.values_list(column, flat=True).distinct() if value not in ("", None))
        for name, column in FILTERS.items()
    }


def prompt_metrics(*, prompt: Prompt, window: Window, filters: dict | None = None) -> dict:
    """The README's metrics answer: figures for the whole window, per version, label, variant and
    model, and a series by hour (by day for a window over 7 days)."""
    rollups = ReplyRollup.objects.filter(prompt=prompt, hour__gte=window.since, hour__lt=window.until, **filters or {})
    group_columns = list(GROUPS.values())
    sums = {column: Sum(column) for column in SUMMED_COLUMNS}
    grouped = list(rollups.values(*group_columns).annotate(**sums).order_by())
    tallies = list(
        RollupTally.objects.filter(rollup__in=rollups)
        .values(*(f"rollup__{column}" for column in group_columns), "kind", "name")
        .annotate(summed_count=Sum("count"), summed_total=Sum("total"))
        .order_by()
    )
    whole = _Totals()
    groups = {name: defaultdict(_Totals) for name in GROUPS}
    for row in grouped:
        for totals in (whole, *(groups[name][row[column]] for name, column in GROUPS.items())):
            totals.add_columns(row)
    for row in tallies:
        for totals in (whole, *(groups[name][row[f"rollup__{column}"]] for name, column in GROUPS.items())):
            totals.add_tally(row)
    answer = {
        "since": window.since.isoformat().replace("+00:00", "Z"),
        "until": window.until.isoformat().replace("+00:00", "Z"),
        "bucket": window.bucket,
        **whole.figures(),
    }
    for name, column in GROUPS.items():
        key = "model" if column == "model_name" else column
        answer[name] = [{key: value, **totals.figures()} for value, totals in sorted(groups[name].items())]
    answer["by_variant"] = [row for row in answer["by_variant"] if row["variant"]]  # replies a split served
    answer["series"] = _series(rollups, window)
    return answer


def _series(rollups, window: Window) -> list[dict]:
    daily = window.bucket == "day"
    rows = {
        datetime.combine(row["day"], time(), UTC) if daily else row["hour"]: row
        for row in rollups.values("day" if daily else "hour")
        .annotate(**{column: Sum(column) for column in SERIES_COLUMNS})
        .order_by()
    }
    points = []
    for start in window.buckets():
        row = rows.get(start, {})
        latency = [row.get(column) or 0 for column in LATENCY_BINS]
        ttft = [row.get(column) or 0 for column in TTFT_BINS]
        points.append(
            {
                "t": start.isoformat().replace("+00:00", "Z"),
                "requests": row.get("requests") or 0,
                "errors": row.get("errors") or 0,
                "p50_ms": percentile_ms(latency, 0.5),
                "p95_ms": percentile_ms(latency, 0.95),
                "ttft_p95_ms": percentile_ms(ttft, 0.95),
                "feedback": {"up": row.get("feedback_up") or 0, "down": row.get("feedback_down") or 0},
                "flagged": row.get("flagged") or 0,
            }
        )
    return points


class _Totals:
    """Summed rollup columns and tallies of one group, and its figures."""

    def __init__(self):
        self.columns = dict.fromkeys(SUMMED_COLUMNS, 0)
        self.tallies = defaultdict(lambda: [0, 0.0])  # (kind, name) -> [count, total]

    def add_columns(self, row: dict) -> None:
        for column in SUMMED_COLUMNS:
            self.columns[column] += row[column] or 0

    def add_tally(self, row: dict) -> None:
        tally = self.tallies[row["kind"], row["name"]]
        tally[0] += row["summed_count"] or 0
        tally[1] += row["summed_total"] or 0.0

    def figures(self) -> dict:
        column = self.columns
        scores = defaultdict(lambda: {"mean": None, "n": 0, "errors": 0})
        errors = {}
        for (kind, name), (count, total) in sorted(self.tallies.items()):
            if kind == RollupTally.Kind.ERROR and count:
                errors[name] = count
            elif kind == RollupTally.Kind.SCORE and count:
                scores[name].update(mean=round(total / count, 4), n=count)
            elif kind == RollupTally.Kind.SCORE_ERROR and count:
                scores[name]["errors"] = count
        latency = [column[name] for name in LATENCY_BINS]
        ttft = [column[name] for name in TTFT_BINS]
        speeds = column["tokens_per_s_count"]
        return {
            "requests": column["requests"],
            "errors": errors,
            "latency_ms": {"p50": percentile_ms(latency, 0.5), "p95": percentile_ms(latency, 0.95)},
            "ttft_ms": {"p50": percentile_ms(ttft, 0.5), "p95": percentile_ms(ttft, 0.95)},
            "tokens": {"prompt": column["prompt_tokens"], "completion": column["completion_tokens"]},
            "tokens_per_s": round(column["tokens_per_s_sum"] / speeds, 2) if speeds else None,
            "feedback": {"up": column["feedback_up"], "down": column["feedback_down"]},
            "flagged": column["flagged"],
            "output_format": {"valid": column["format_valid"], "invalid": column["format_invalid"]},
            "retrieved": column["retrieved"],
            "nothing_found": column["nothing_found"],
            "online_scores": dict(scores),
        }

"""The variants of an A/B split side by side (the issue's "A/B tests"), read from the rollups: per
variant its requests, error rate, thumbs-up rate, flagged rate, latency p50/p95 and online score
means; per variant against the first (the control) each difference with its 95 % interval.

How the intervals are made, figure by figure (the rollups keep counts, sums and histograms):
- rates (errors per request, thumbs up per thumb given, flagged per request): a two-proportion
  normal interval with one success and one failure added to each side (Agresti and Caffo, 2000),
  which stays honest at 0 % and for small counts where the plain (Wald) interval collapses to a point;
- latency p50 and p95: a bootstrap of the two latency histograms (2,000 multinomial resamples,
  seeded by the split, so a page shows the same figures twice); values are the bins' middles
  (monitoring.histogram: within ±11 %), so a difference smaller than a bin is not resolved;
- online score means: no interval. The rollups keep a scorer's sum and count, not its sum of
  squares, so the spread (and Welch's interval) cannot be known; the difference is shown alone.

`comparison_data` is numbers (`GET /api/prompts/<slug>/split/` answers it as `"comparison"`: this
module registers it with prompts.splits); `comparison_for` adds the rows the monitoring page shows
(monitoring/_comparison.html).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TypedDict

import numpy as np
from django.db.models import Sum

from prompts.models import Prompt, PromptSplit
from prompts.splits import register_comparison, split_in_window, variant_versions

from .charts import duration
from .histogram import BINS, bin_middle_ms
from .models import LATENCY_BINS, ReplyRollup, RollupTally

Z_95 = 1.959963984540054  # the normal distribution's 97.5th percentile
BOOTSTRAP_RESAMPLES = 2000
SCORE_NOTE = (
    "Online score differences have no interval: the rollups keep each scorer's sum and count, "
    "not its sum of squares, so their spread is unknown."
)
LATENCY_NOTE = (
    "Latency intervals come from the binned histograms (bins within ±11 %): smaller differences are not resolved."
)
_FIGURES = ("requests", "errors", "feedback_up", "feedback_down", "flagged", *LATENCY_BINS)


class Difference(TypedDict):
    """A variant's figure minus the control's, with its 95 % interval (None where none is known)."""

    difference: float | None
    low: float | None
    high: float | None
    clear: bool  # the interval leaves out 0: the variants differ on this figure


class VariantFigures(TypedDict):
    label: str
    weight: float
    version: int | None  # the version its label points at now
    requests: int
    share: float | None  # of the split's requests in the window
    errors: int
    error_rate: float | None
    feedback: dict  # {"up", "down"}
    thumbs_up_rate: float | None  # up / (up + down)
    flagged: int
    flagged_rate: float | None
    latency_ms: dict  # {"p50", "p95"}
    online_scores: dict  # {"<scorer>": {"mean", "n"}}
    against_control: dict  # figure -> Difference; {} for the control itself


class Comparison(TypedDict):
    prompt: str
    split: dict  # {"id", "running", "since", "until"}
    control: str
    variants: list[VariantFigures]
    notes: list[str]


def comparison_for(prompt: Prompt, since: datetime, until: datetime) -> dict | None:
    """What the monitoring page shows (monitoring/_comparison.html): the comparison, and `table`,
    its figures as rows of text with a cell per variant."""
    comparison = comparison_data(prompt, since, until)
    if comparison is None:
        return None
    window = {name: datetime.fromisoformat(comparison["split"][name]) for name in ("since", "until")}
    return {
        **comparison,
        "table": comparison_table(comparison),
        "window_text": f"{window['since']:%-d %b %Y %H:%M} to {window['until']:%-d %b %Y %H:%M} UTC",
    }


def comparison_data(prompt: Prompt, since: datetime, until: datetime) -> Comparison | None:
    """The split running on `prompt` (or the last one that ended after `since`) compared over the
    part of [since, until) it ran; None when no split falls in the window. Two queries on the
    rollups (their sums by variant, then their tallies), whatever the traffic."""
    split = split_in_window(prompt, since)
    if split is None:
        return None
    since, until = max(since, split.created_at), min(until, split.ended_at or until)
    # Rollups are hourly: the hour the split started in counts whole (replies asked before it in
    # that hour carry no variant, and a variant's label is only counted under its own name).
    rollups = ReplyRollup.objects.filter(
        prompt=prompt,
        variant__in=split.labels,
        hour__gte=since.replace(minute=0, second=0, microsecond=0),
        hour__lt=until,
    )
    sums = {row.pop("variant"): row for row in rollups.values("variant").annotate(**{c: Sum(c) for c in _FIGURES})}
    scores: dict[str, dict[str, dict]] = {}
    tallies = (
        RollupTally.objects.filter(rollup__in=rollups, kind=RollupTally.Kind.SCORE)
        .values("rollup__variant", "name")
        .annotate(n=Sum("count"), total=Sum("total"))
    )
    for tally in tallies:
        if tally["n"]:
            scores.setdefault(tally["rollup__variant"], {})[tally["name"]] = {
                "mean": tally["total"] / tally["n"],
                "n": tally["n"],
            }
    versions = variant_versions(prompt, split)
    total = sum((sums.get(label) or {}).get("requests") or 0 for label in split.labels)
    variants = [
        _variant_figures(variant, versions.get(variant["label"]), sums.get(variant["label"]) or {}, total)
        for variant in split.variants
    ]
    for variant in variants:
        variant["online_scores"] = scores.get(variant["label"], {})
    control = variants[0]
    rng = np.random.default_rng(split.pk)
    for variant in variants[1:]:
        variant["against_control"] = _against(variant, control, sums, rng)
    notes = [LATENCY_NOTE]
    if any(variant["online_scores"] for variant in variants):
        notes.append(SCORE_NOTE)
    return {
        "prompt": prompt.slug,
        "split": _split_window(split, since, until),
        "control": control["label"],
        "variants": variants,
        "notes": notes,
    }


def _split_window(split: PromptSplit, since: datetime, until: datetime) -> dict:
    return {"id": split.pk, "running": split.running, "since": since.isoformat(), "until": until.isoformat()}


def _variant_figures(variant: dict, version: int | None, sums: dict, total: int) -> VariantFigures:
    requests = sums.get("requests") or 0
    up, down = sums.get("feedback_up") or 0, sums.get("feedback_down") or 0
    latency = _histogram(sums)
    return {
        "label": variant["label"],
        "weight": variant["weight"],
        "version": version,
        "requests": requests,
        "share": requests / total if total else None,
        "errors": sums.get("errors") or 0,
        "error_rate": _rate(sums.get("errors") or 0, requests),
        "feedback": {"up": up, "down": down},
        "thumbs_up_rate": _rate(up, up + down),
        "flagged": sums.get("flagged") or 0,
        "flagged_rate": _rate(sums.get("flagged") or 0, requests),
        "latency_ms": {"p50": _percentile(latency, 0.5), "p95": _percentile(latency, 0.95)},
        "online_scores": {},
        "against_control": {},
    }


def _against(variant: VariantFigures, control: VariantFigures, sums: dict, rng) -> dict[str, Difference]:
    """The variant's figures minus the control's, each with its 95 % interval where one is known."""
    differences = {
        "error_rate": _rates_difference(variant["errors"], variant["requests"], control["errors"], control["requests"]),
        "thumbs_up_rate": _rates_difference(
            variant["feedback"]["up"],
            variant["feedback"]["up"] + variant["feedback"]["down"],
            control["feedback"]["up"],
            control["feedback"]["up"] + control["feedback"]["down"],
        ),
        "flagged_rate": _rates_difference(
            variant["flagged"], variant["requests"], control["flagged"], control["requests"]
        ),
    }
    ours, theirs = _histogram(sums.get(variant["label"]) or {}), _histogram(sums.get(control["label"]) or {})
    for name, quantile in (("latency_p50_ms", 0.5), ("latency_p95_ms", 0.95)):
        differences[name] = _percentiles_difference(ours, theirs, quantile, rng)
    for scorer, score in variant["online_scores"].items():
        base = control["online_scores"].get(scorer)
        difference = score["mean"] - base["mean"] if base else None
        differences[f"online_scores.{scorer}"] = _difference(difference, None, None)
    return differences


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def _difference(difference: float | None, low: float | None, high: float | None) -> Difference:
    return {
        "difference": difference,
        "low": low,
        "high": high,
        "clear": low is not None and high is not None and (low > 0 or high < 0),
    }


def _rates_difference(count: int, total: int, base_count: int, base_total: int) -> Difference:
    """count/total - base_count/base_total, with the Agresti-Caffo 95 % interval."""
    if not total or not base_total:
        return _difference(None, None, None)
    adjusted, base_adjusted = (count + 1) / (total + 2), (base_count + 1) / (base_total + 2)
    spread = math.sqrt(adjusted * (1 - adjusted) / (total + 2) + base_adjusted * (1 - base_adjusted) / (base_total + 2))
    middle = adjusted - base_adjusted
    low, high = max(-1.0, middle - Z_95 * spread), min(1.0, middle + Z_95 * spread)
    return _difference(count / total - base_count / base_total, low, high)


def _histogram(sums: dict) -> np.ndarray:
    return np.array([sums.get(name) or 0 for name in LATENCY_BINS], dtype=np.int64)  # (BINS,)


def _percentile(counts: np.ndarray, quantile: float) -> float | None:
    index = _percentile_bins(counts[None, :], quantile)[0]
    return round(bin_middle_ms(int(index)), 1) if counts.sum() else None


def _percentile_bins(counts: np.ndarray, quantile: float) -> np.ndarray:
    """The nearest-rank percentile's bin of each histogram (rows of `counts`, (R, BINS)) → (R,)."""
    totals = counts.sum(axis=1)
    ranks = np.maximum(1, np.ceil(quantile * totals))
    return np.minimum((counts.cumsum(axis=1) < ranks[:, None]).sum(axis=1), BINS - 1)


MIDDLES = np.array([bin_middle_ms(index) for index in range(BINS)])


def _percentiles_difference(ours: np.ndarray, theirs: np.ndarray, quantile: float, rng) -> Difference:
    """Our percentile minus theirs, with a bootstrap 95 % interval over the two histograms."""
    if ours.sum() < 2 or theirs.sum() < 2:
        return _difference(None, None, None)
    difference = (
        MIDDLES[_percentile_bins(ours[None, :], quantile)[0]] - MIDDLES[_percentile_bins(theirs[None, :], quantile)[0]]
    )
    resampled = [rng.multinomial(h.sum(), h / h.sum(), size=BOOTSTRAP_RESAMPLES) for h in (ours, theirs)]  # (B, BINS)
    spread = MIDDLES[_percentile_bins(resampled[0], quantile)] - MIDDLES[_percentile_bins(resampled[1], quantile)]
    low, high = np.percentile(spread, [2.5, 97.5])
    return _difference(round(float(difference), 1), round(float(low), 1), round(float(high), 1))


# --- as the page shows it ---------------------------------------------------------------------------


class Cell(TypedDict):
    value: str
    difference: str  # against the control, with its interval ("" for the control)
    clear: bool  # the interval leaves out 0


def comparison_table(comparison: Comparison) -> list[dict]:
    """Rows {"figure", "cells": [Cell per variant]}: requests, error rate, thumbs up, flagged, latency
    p50 and p95, then each online scorer."""
    variants = comparison["variants"]

    def row(figure: str, value, key: str | None, difference_text) -> dict:
        cells = []
        for variant in variants:
            against = variant["against_control"].get(key) if key else None
            cells.append(
                {
                    "value": value(variant),
                    "difference": difference_text(against) if against else "",
                    "clear": bool(against and against["clear"]),
                }
            )
        return {"figure": figure, "cells": cells}

    rows = [
        row("Requests", _requests_text, None, None),
        row("Errors", lambda v: _percent(v["error_rate"]), "error_rate", _points),
        row("Thumbs up", _thumbs_text, "thumbs_up_rate", _points),
        row("Flagged", lambda v: _percent(v["flagged_rate"]), "flagged_rate", _points),
        row("Latency p50", lambda v: duration(v["latency_ms"]["p50"]), "latency_p50_ms", _milliseconds),
        row("Latency p95", lambda v: duration(v["latency_ms"]["p95"]), "latency_p95_ms", _milliseconds),
    ]
    scorers = sorted({name for variant in variants for name in variant["online_scores"]})
    for scorer in scorers:
        rows.append(
            row(
                f"Online: {scorer}",
                lambda v, scorer=scorer: _score_text(v["online_scores"].get(scorer)),
                f"online_scores.{scorer}",
                _score_difference,
            )
        )
    return rows


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{100 * rate:.1f} %"


def _requests_text(variant: VariantFigures) -> str:
    share = "" if variant["share"] is None else f" · {100 * variant['share']:.1f} % of the split"
    return f"{variant['requests']:,}{share} (weight {100 * variant['weight']:g} %)"


def _thumbs_text(variant: VariantFigures) -> str:
    given = variant["feedback"]["up"] + variant["feedback"]["down"]
    return "—" if not given else f"{_percent(variant['thumbs_up_rate'])} of {given:,}"


def _score_text(score: dict | None) -> str:
    return "—" if score is None else f"{score['mean']:.3g} (n = {score['n']:,})"


def _signed(number: float, unit: str = "", digits: int = 1) -> str:
    return f"{'+' if number > 0 else '−' if number < 0 else '±'}{abs(number):.{digits}f}{unit}"


def _points(difference: Difference) -> str:
    """A rate's difference in percentage points, with its interval."""
    if difference["difference"] is None:
        return "—"
    text = _signed(100 * difference["difference"], " pts")
    if difference["low"] is not None:
        text += f" (95 %: {_signed(100 * difference['low'])} to {_signed(100 * difference['high'])})"
    return text


def _milliseconds(difference: Difference) -> str:
    if difference["difference"] is None:
        return "—"
    text = _signed(difference["difference"], " ms", 0)
    if difference["low"] is not None:
        text += f" (95 %: {_signed(difference['low'], '', 0)} to {_signed(difference['high'], '', 0)})"
    return text


def _score_difference(difference: Difference) -> str:
    if difference["difference"] is None:
        return "—"
    return f"{_signed(difference['difference'], '', 3)} (no interval)"


register_comparison(comparison_data)

"""The monitoring page of a prompt: its figures over a window, per version, label, variant and model,
charts drawn here as SVG, and the A/B split's comparison while one runs. The window and filters
change through htmx (the figures' partial, the same HTML the page embeds)."""

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from studio.errors import StudioError

from . import selectors
from .charts import duration, series_charts
from .comparison import comparison_for

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90)}
DEFAULT_WINDOW = "7d"


@login_required
@require_GET
def prompt_monitoring(request, slug):
    prompt = selectors.prompt_for_monitoring(request.user, slug)
    if prompt is None:
        raise Http404(f"There is no prompt “{slug}”.")
    asked = {name: request.GET.get(name, "").strip() for name in ("window", "since", "until", *selectors.FILTERS)}
    if asked["window"] not in WINDOWS and not asked["since"]:
        asked["window"] = DEFAULT_WINDOW
    error = ""
    try:
        window = _window(asked)
        filters = selectors.clean_filters(asked)
    except StudioError as exc:  # said above the figures, which show the default window unfiltered
        error = str(exc)
        asked.update(window=DEFAULT_WINDOW, since="", until="", **dict.fromkeys(selectors.FILTERS, ""))
        window, filters = _window(asked), {}
    metrics = selectors.prompt_metrics(prompt=prompt, window=window, filters=filters)
    context = {
        "prompt": prompt,
        "metrics": metrics,
        "whole": shown(metrics),
        "tables": [
            {"title": title, "column": column, "rows": [shown(row, name=named(row)) for row in metrics[key]]}
            for key, title, column, named in TABLES
            if metrics[key]
        ],
        "window_text": f"{window.since:%-d %b %Y %H:%M} to {window.until:%-d %b %Y %H:%M} UTC",
        "filtered": bool(filters),
        "asked": asked,
        "windows": WINDOWS,
        "error": error,
        "choices": selectors.filter_choices(prompt),
        "charts": series_charts(metrics["series"], metrics["bucket"]),
        "comparison": comparison_for(prompt, window.since, window.until),
    }
    template = "monitoring/_figures.html" if request.htmx else "monitoring/prompt.html"
    return render(request, template, context)


# The page's tables: (the metrics' key, title, first column, the row's name).
TABLES = [
    ("by_version", "By version", "Version", lambda row: f"v{row['version']}"),
    ("by_label", "By label", "Label", lambda row: row["label"] or "(none: chats and playground)"),
    ("by_variant", "By A/B variant", "Variant", lambda row: row["variant"]),
    ("by_model", "By model", "Model", lambda row: row["model"] or "(the served model)"),
]


def shown(figures: dict, name: str = "") -> dict:
    """The figures with what the page shows beside them: error total and rates in percent, durations
    in words."""

    def percent(count: int, total: int) -> float | None:
        return round(100 * count / total, 1) if total else None

    error_total = sum(figures["errors"].values())
    formats = figures["output_format"]
    return {
        **figures,
        "name": name,
        "error_total": error_total,
        "error_percent": percent(error_total, figures["requests"]),
        "valid_percent": percent(formats["valid"], formats["valid"] + formats["invalid"]),
        "nothing_found_percent": percent(figures["nothing_found"], figures["retrieved"]),
        "latency_p50": duration(figures["latency_ms"]["p50"]),
        "latency_p95": duration(figures["latency_ms"]["p95"]),
        "ttft_p50": duration(figures["ttft_ms"]["p50"]),
        "ttft_p95": duration(figures["ttft_ms"]["p95"]),
    }


def _window(asked: dict) -> selectors.Window:
    """A preset (the last 24 hours, 7, 30 or 90 days), or the times asked (since, until)."""
    if asked["since"]:
        return selectors.clean_window(asked["since"], asked["until"] or None)
    return selectors.clean_window(None, None, length=WINDOWS[asked["window"]], now=timezone.now())

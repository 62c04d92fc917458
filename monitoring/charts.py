"""The monitoring page's charts as SVG drawn here (as the fine-tune loss chart: no chart library,
works under the CSP): requests and errors per bucket as bars, latency p50 and p95 as lines. Every
bar and point has a <title>, so hovering it shows its figures."""

from __future__ import annotations

from datetime import datetime

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 24  # room for the axis labels


def duration(ms: float | None) -> str:
    """1.2 s, 840 ms, —."""
    if ms is None:
        return "—"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _when(t: str, bucket: str) -> str:
    moment = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return f"{moment.day} {moment:%b}" if bucket == "day" else f"{moment.day} {moment:%b %H}:00"


def _point_title(point: dict, bucket: str) -> str:
    return (
        f"{_when(point['t'], bucket)}{' (UTC day)' if bucket == 'day' else ' UTC'} · {point['requests']} requests · "
        f"{point['errors']} errors · latency p50 {duration(point['p50_ms'])}, p95 {duration(point['p95_ms'])} · "
        f"TTFT p95 {duration(point['ttft_p95_ms'])} · thumbs {point['feedback']['up']} up, "
        f"{point['feedback']['down']} down · {point['flagged']} flagged"
    )


def series_charts(series: list[dict], bucket: str) -> dict | None:
    """{"requests": bars, "latency": lines} for the template, or None when no request is in the window."""
    if not any(point["requests"] for point in series):
        return None
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / len(series)
    bottom = TOP + plot_height
    most_requests = max(point["requests"] for point in series)
    slowest = max((point["p95_ms"] or 0) for point in series) or 1.0

    def x_middle(index: int) -> float:
        return LEFT + slot * (index + 0.5)

    def latency_y(ms: float) -> float:
        return bottom - plot_height * ms / slowest

    bars, p50_points, p95_points = [], [], []
    for index, point in enumerate(series):
        title = _point_title(point, bucket)
        height = plot_height * point["requests"] / most_requests
        error_height = plot_height * point["errors"] / most_requests
        bars.append(
            {
                "x": round(LEFT + slot * index + slot * 0.1, 1),
                "width": round(max(slot * 0.8, 1.0), 1),
                "y": round(bottom - height, 1),
                "height": round(height, 1),
                "error_y": round(bottom - error_height, 1),
                "error_height": round(error_height, 1),
                "title": title,
            }
        )
        if point["p95_ms"] is not None:
            p50_points.append(
                {"x": round(x_middle(index), 1), "y": round(latency_y(point["p50_ms"]), 1), "title": title}
            )
            p95_points.append(
                {"x": round(x_middle(index), 1), "y": round(latency_y(point["p95_ms"]), 1), "title": title}
            )
    frame = {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": bottom,
        "plot_height": plot_height,
        "first": _when(series[0]["t"], bucket),
        "last": _when(series[-1]["t"], bucket),
    }
    return {
        "requests": {**frame, "bars": bars, "high": most_requests},
        "latency": {
            **frame,
            "high": duration(slowest),
            "p50": p50_points,
            "p95": p95_points,
            "p50_line": " ".join(f"{p['x']},{p['y']}" for p in p50_points),
            "p95_line": " ".join(f"{p['x']},{p['y']}" for p in p95_points),
        },
    }

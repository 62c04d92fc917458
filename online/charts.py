"""A rule's daily means as SVG (server-drawn like the fine-tune loss chart: no chart library, works
under the CSP); each point's <title> shows its figures on hover."""

from __future__ import annotations

WIDTH, HEIGHT, PAD = 640, 200, 36
# One colour a scorer (cycled), as SVG attributes: the stylesheet stays the studio's one file.
COLOURS = ("#2f6fde", "#d9822b", "#2e9d57", "#b8336a", "#6b4fbb", "#5a6270")


def score_chart(days: list[dict], names: list[str]) -> dict | None:
    """{"width", "height", "lines": [{"name", "points", "dots": [{"x", "y", "title"}], "colour"}], ...}
    for the scorers' daily means on a 0-1 scale; None before the first score."""
    if not any(day["scorers"] for day in days):
        return None
    span = max(len(days) - 1, 1)

    def x(index: int) -> float:
        return round(PAD + (WIDTH - 2 * PAD) * (index / span if len(days) > 1 else 0.5), 1)

    def y(value: float) -> float:
        return round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * value, 1)

    lines = []
    for number, name in enumerate(names):
        dots = [
            {
                "x": x(index),
                "y": y(figures["mean"]),
                "title": f"{name}, {day['day']}: mean {figures['mean']:.2f} of {figures['n']} "
                f"({figures['errors']} errors)",
            }
            for index, day in enumerate(days)
            if (figures := day["scorers"].get(name)) and figures["mean"] is not None
        ]
        if dots:
            points = " ".join(f"{dot['x']},{dot['y']}" for dot in dots)
            lines.append({"name": name, "points": points, "dots": dots, "colour": COLOURS[number % len(COLOURS)]})
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "pad": PAD,
        "bottom": HEIGHT - PAD,
        "right": WIDTH - PAD,
        "middle": y(0.5),
        "lines": lines,
        "first_day": days[0]["day"],
        "last_day": days[-1]["day"],
    }

"""What one finished reply adds to its rollup, from the reply's stored fields alone: the live rollups
(services), the backfill migration and the tests' scans all call `reply_figures`, so they cannot
disagree. Django-free (plain values in, a dict out)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .histogram import bin_of

# Where a tally goes in a figures dict: "kind.field:name" (the rollup's columns have no colon).
ERROR_COUNT = "error.count:"
SCORE_COUNT = "score.count:"
SCORE_TOTAL = "score.total:"
SCORE_ERROR_COUNT = "score_error.count:"
SCORE_PREFIXES = (SCORE_COUNT, SCORE_TOTAL, SCORE_ERROR_COUNT)
UNKNOWN_ERROR = "failed"  # a failed reply stored before error codes were kept


@dataclass(frozen=True)
class ReplyFacts:
    """The fields of an assistant reply (chat.Message) that its figures read."""

    status: str  # complete, stopped or failed (in progress: not counted yet)
    error_code: str
    finish_reason: str
    created_at: datetime
    finished_at: datetime | None
    ttft_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_per_s: float | None
    feedback: str  # "up", "down" or ""
    flagged: bool
    has_output_format: bool  # asked for one (API) or its version has one (chat.selectors.output_format_for)
    retrieval: dict  # Message.retrieval: {} when it searched nothing


def reply_figures(facts: ReplyFacts) -> dict[str, float]:
    """The amounts the reply adds (zeros left out).

    Latency is finished_at - created_at (from the request to the last token; a reply continued
    after it was cut counts until its last part ended), over the replies that did not fail (a
    failure's time says how long it took to give up, not how fast the model answers); TTFT as the
    worker measured it. Output format: valid when decoded to its end under the format, invalid when
    its format failed or the maximum tokens cut it before the format was complete.
    """
    failed = facts.status == "failed"
    figures: dict[str, float] = {"requests": 1}
    if failed:
        figures["errors"] = 1
        figures[ERROR_COUNT + (facts.error_code or UNKNOWN_ERROR)] = 1
    elif facts.finished_at is not None:
        latency_ms = (facts.finished_at - facts.created_at).total_seconds() * 1000
        figures[f"latency_{bin_of(latency_ms):02d}"] = 1
    if facts.ttft_ms is not None:
        figures[f"ttft_{bin_of(facts.ttft_ms):02d}"] = 1
    if facts.prompt_tokens:
        figures["prompt_tokens"] = facts.prompt_tokens
    if facts.completion_tokens:
        figures["completion_tokens"] = facts.completion_tokens
    if facts.tokens_per_s is not None:
        figures["tokens_per_s_sum"] = facts.tokens_per_s
        figures["tokens_per_s_count"] = 1
    if facts.feedback == "up":
        figures["feedback_up"] = 1
    elif facts.feedback == "down":
        figures["feedback_down"] = 1
    if facts.flagged:
        figures["flagged"] = 1
    if facts.has_output_format:
        if facts.error_code == "output_format_failed" or (
            facts.status == "complete" and facts.finish_reason == "length"
        ):
            figures["format_invalid"] = 1
        elif facts.status == "complete":
            figures["format_valid"] = 1
    if (facts.retrieval or {}).get("searched"):
        figures["retrieved"] = 1
        if facts.retrieval.get("nothing_passed"):
            figures["nothing_found"] = 1
    return figures


def figures_change(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What to add to go from `before` to `after` (nothing for an unchanged figure)."""
    change = {name: after.get(name, 0) - before.get(name, 0) for name in before.keys() | after.keys()}
    return {name: amount for name, amount in change.items() if amount}


def served_label(*, variant: str, asked_label: str | None, api: bool, version_labels: list[str], newest: bool) -> str:
    """The label a reply is counted under. The split's variant when one chose it; else the label
    the request named (`asked_label`: "" for `prompt:<slug>@v3`; None where the request's model was
    not kept); chats and playground runs from a version name none (""). An API request whose model
    was not kept is counted under the label `prompt:<slug>` resolves to when that served it:
    `production` when its version carries it, else `latest` when it is the newest version; else
    (it was asked by a label or a number) the version's only label, or "" when it has several or none."""
    if variant:
        return variant
    if asked_label is not None:
        return asked_label
    if not api:
        return ""
    if "production" in version_labels:
        return "production"
    if newest:
        return "latest"
    return version_labels[0] if len(version_labels) == 1 else ""

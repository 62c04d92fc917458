"""Latency histograms with fixed log-spaced bins, so that percentiles over any window are read from
summed bin counts (a rollup keeps counts, never the values).

64 bins from 1 ms to 10 min: each bin is RATIO (~1.231) times as wide as the one before; below
1 ms falls in the first, above 10 min in the last. A percentile is reported as its bin's geometric
middle, within a factor sqrt(RATIO) (about ±11 %) of the true value; for 1 ms to 10 min.

Django-free: the rollups (monitoring.services), the backfill migration and the tests' scans share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BINS = 64
LOW_MS = 1.0  # the first bin's upper edge is LOW_MS * RATIO
HIGH_MS = 600_000.0  # 10 minutes: the last bin's lower edge is HIGH_MS / RATIO
RATIO = (HIGH_MS / LOW_MS) ** (1 / BINS)
_LOG_RATIO = math.log(RATIO)


def bin_of(ms: float) -> int:
    """The bin a duration in milliseconds falls in (0 to BINS - 1)."""
    if not ms > LOW_MS:  # also NaN and negatives (a clock that stepped back)
        return 0
    return min(BINS - 1, int(math.log(ms / LOW_MS) / _LOG_RATIO))


def bin_middle_ms(index: int) -> float:
    """What a bin reports: the geometric middle of its edges."""
    return LOW_MS * RATIO ** (index + 0.5)


def percentile_ms(counts: Sequence[int], quantile: float) -> float | None:
    """The nearest-rank percentile (the smallest value with at least `quantile` of the values at or
    below it) of a histogram, as its bin's middle rounded to 0.1 ms; None for an empty histogram."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = max(1, math.ceil(quantile * total))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return round(bin_middle_ms(index), 1)
    return round(bin_middle_ms(len(counts) - 1), 1)  # unreachable: seen ends at total

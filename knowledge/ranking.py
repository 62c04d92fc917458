"""How candidates become a ranking: weighted reciprocal rank fusion of the keyword and vector
candidates, and near-duplicate passages collapsed into one result. Plain functions over chunk ids
and texts, Django-free: knowledge search (search.py) ranks a base's index with them and the tuning
sweep (sweep.py) ranks its in-memory twins, so what the sweep measures is what search does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

RRF_K = 60  # Cormack et al., 2009
SHINGLE_WORDS = 5
# Two passages are near duplicates when this share of the shorter one's five-word runs is in the
# other: copies of one document that differ by a banner line, or chunks that overlap by most of
# their text. Neighbouring chunks of the default overlap (30 of 200 tokens) share about 15 %.
NEAR_DUPLICATE_SHARE = 0.6


def fuse(keyword: Sequence[tuple[int, float]], vector: Sequence[tuple[int, float]], weight: float) -> dict[int, float]:
    """{chunk id: fused score}: Σ share / (RRF_K + rank) over the two rankings, the vector ranking's
    share `weight` and the keywords' 1 - weight, doubled so that the equal weighting (0.5) gives
    plain reciprocal rank fusion's scores (1/61 for a chunk first in one ranking)."""
    fused: dict[int, float] = {}
    for candidates, share in ((keyword, 1.0 - weight), (vector, weight)):
        if share <= 0:
            continue
        for rank, (chunk_id, _) in enumerate(candidates, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 2.0 * share / (RRF_K + rank)
    return fused


def shingles(text: str) -> frozenset:
    words = re.findall(r"\w+", text.lower())
    if len(words) <= SHINGLE_WORDS:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1))


def near_duplicates(first: frozenset, second: frozenset) -> bool:
    smaller = min(len(first), len(second))
    return smaller > 0 and len(first & second) >= NEAR_DUPLICATE_SHARE * smaller


def collapse(ranked: Sequence[int], text_of: Callable[[int], str], *, wanted: int) -> list[tuple[int, list[int]]]:
    """[(chunk id, [its near duplicates ranked below it])], best first, until `wanted` results:
    each chunk that is a near duplicate of one kept above it is listed under that one instead."""
    kept: list[tuple[int, list[int], frozenset]] = []
    for chunk_id in ranked:
        words = shingles(text_of(chunk_id))
        owner = next((entry for entry in kept if near_duplicates(entry[2], words)), None)
        if owner is not None:
            owner[1].append(chunk_id)
        elif len(kept) < wanted:
            kept.append((chunk_id, [], words))
    return [(chunk_id, also) for chunk_id, also, _ in kept]

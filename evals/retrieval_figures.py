"""Retrieval measured on the failure cases: where a person judged which passages were right (or
that the knowledge base lacks the answer), how well an evaluation's retrieval found them.

recall@k: of the right passages, the share among the k the model read (averaged over the cases);
MRR@10: 1 / the rank of the first right passage in the top 10 (0 when none is); never retrieved:
the share of judged cases whose right passage the model never read (not in its top k, or not in
the knowledge base at all). Those are data problems, not prompt problems: no rewording of the
prompt fixes them.
"""

from __future__ import annotations

from knowledge.retrieval import is_right

MRR_DEPTH = 10  # an evaluation retrieves at least this many passages per case


def judged(case) -> bool:
    judgment = case.retrieval_judgment or {}
    return bool(judgment.get("right") or judgment.get("not_in_kb"))


def right_rank(judgment: dict, retrieved: list[dict]) -> int | None:
    """The rank (from 1) of the first right passage among `retrieved`, None when none is."""
    for rank, source in enumerate(retrieved, start=1):
        if any(is_right(item, source) for item in judgment.get("right", [])):
            return rank
    return None


def figures(pairs, k: int) -> dict | None:
    """`pairs`: (case, retrieved sources best first) of one evaluation. None when no case is judged."""
    recalls, reciprocal_ranks, judged_count, not_in_kb, missed = [], [], 0, 0, 0
    for case, retrieved in pairs:
        if not judged(case):
            continue
        judged_count += 1
        judgment = case.retrieval_judgment
        if judgment.get("not_in_kb"):
            not_in_kb += 1
            continue
        right = judgment["right"]
        read = retrieved[:k]
        recalls.append(sum(1 for item in right if any(is_right(item, s) for s in read)) / len(right))
        rank = right_rank(judgment, retrieved[:MRR_DEPTH])
        reciprocal_ranks.append(1.0 / rank if rank else 0.0)
        if rank is None or rank > k:
            missed += 1
    if not judged_count:
        return None
    return {
        "judged": judged_count,
        "k": k,
        "recall_at_k": sum(recalls) / len(recalls) if recalls else None,
        "mrr_at_10": sum(reciprocal_ranks) / len(reciprocal_ranks) if reciprocal_ranks else None,
        "never_retrieved": (not_in_kb + missed) / judged_count,
        "not_in_kb": not_in_kb,
        "missed": missed,
    }


def moved(case, before: list[dict], after: list[dict], k_before: int, k_after: int) -> str:
    """Between two evaluations of a judged case: "in" (the right passage entered the top k), "out",
    "both", "neither" or "" (not judged, or judged not in the knowledge base)."""
    if not judged(case) or case.retrieval_judgment.get("not_in_kb"):
        return ""
    first, second = right_rank(case.retrieval_judgment, before), right_rank(case.retrieval_judgment, after)
    was, now = first is not None and first <= k_before, second is not None and second <= k_after
    return {(False, True): "in", (True, False): "out", (True, True): "both", (False, False): "neither"}[(was, now)]

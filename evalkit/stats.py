"""Confidence intervals for evaluation metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0, 1) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def bootstrap_interval(
    statistic: Callable[[Any], float], n: int, *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` examples (deterministic)."""
    import numpy as np

    if n <= 0:
        return (0.0, 1.0)
    rng = np.random.default_rng(seed)
    values = sorted(statistic(rng.integers(0, n, size=n)) for _ in range(resamples))
    lo = values[math.floor((1 - level) / 2 * (resamples - 1))]
    hi = values[math.ceil((1 + level) / 2 * (resamples - 1))]
    return (float(lo), float(hi))


def macro_f1(gold: Sequence[object], predicted: Sequence[object]) -> float:
    """Macro-averaged F1 over the labels that occur in gold or predictions (as scikit-learn)."""
    import numpy as np

    labels = sorted(set(gold) | set(predicted), key=repr)
    if not labels:
        return 0.0
    index = {label: i for i, label in enumerate(labels)}
    g = np.fromiter((index[x] for x in gold), dtype=np.int64, count=len(gold))
    p = np.fromiter((index[x] for x in predicted), dtype=np.int64, count=len(predicted))
    return _macro_f1_codes(g, p, len(labels))


def _macro_f1_codes(gold, predicted, n_labels: int) -> float:
    import numpy as np

    present = np.bincount(gold, minlength=n_labels) + np.bincount(predicted, minlength=n_labels) > 0
    tp = np.bincount(gold[gold == predicted], minlength=n_labels)
    gold_count = np.bincount(gold, minlength=n_labels)
    pred_count = np.bincount(predicted, minlength=n_labels)
    denom = gold_count + pred_count
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_labels), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def macro_f1_interval(gold: Sequence[object], predicted: Sequence[object]) -> tuple[float, float]:
    """Bootstrap interval of macro F1 (a Wilson interval does not apply to it)."""
    import numpy as np

    labels = sorted(set(gold) | set(predicted), key=repr)
    index = {label: i for i, label in enumerate(labels)}
    g = np.array([index[x] for x in gold], dtype=np.int64)
    p = np.array([index[x] for x in predicted], dtype=np.int64)
    return bootstrap_interval(lambda idx: _macro_f1_codes(g[idx], p[idx], len(labels)), len(g))


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """Interval of a mean: Wilson when every value is 0 or 1, otherwise bootstrap."""
    n = len(values)
    if all(v in (0, 1) for v in values):
        return wilson_interval(sum(values), n)
    return bootstrap_interval(lambda idx: sum(values[i] for i in idx) / n, n)


# --------------------------------------------------------------------------- paired comparisons


def mcnemar_exact(worse: int, better: int) -> float:
    """Two-sided exact McNemar p-value for paired outcomes.

    ``worse`` examples went from correct to wrong, ``better`` from wrong to correct; under "no change"
    each flip is a fair coin, so the p-value is the two-sided binomial tail of the smaller count
    (capped at 1). With no flips at all there is no evidence of a change: p = 1.
    """
    flips = worse + better
    if flips == 0:
        return 1.0
    k = min(worse, better)
    tail = sum(math.comb(flips, i) for i in range(k + 1)) / 2**flips
    return min(1.0, 2 * tail)


def paired_difference_interval(
    both: int, only_first: int, only_second: int, neither: int, z: float = Z95
) -> tuple[float, float]:
    """95% interval of p2 - p1 for paired proportions (Newcombe 1998, method 10: hybrid score).

    ``only_first`` examples are correct in the first run only, ``only_second`` in the second only.
    p1 = (both + only_first) / n and p2 = (both + only_second) / n. Better behaved than the Wald
    interval when few examples flip, and it never leaves [-1, 1].
    """
    n = both + only_first + only_second + neither
    if n == 0:
        return (-1.0, 1.0)
    p1 = (both + only_first) / n
    p2 = (both + only_second) / n
    l1, u1 = wilson_interval(both + only_first, n, z)
    l2, u2 = wilson_interval(both + only_second, n, z)
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    phi = 0.0 if margins == 0 else (both * neither - only_first * only_second) / math.sqrt(margins)
    diff = p2 - p1
    lower = diff - math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    upper = diff + math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return (max(-1.0, lower), min(1.0, upper))


def paired_bootstrap_interval(
    statistic: Callable[[Sequence[int]], float], n: int, *, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of a paired statistic (the same resampled examples for both runs)."""
    if n <= 0:
        return (-1.0, 1.0)
    return bootstrap_interval(statistic, n, resamples=resamples, seed=seed)


# --------------------------------------------------------------------------- agreement between raters


def cohen_kappa(first: Sequence[object], second: Sequence[object]) -> float:
    """Cohen's kappa of two raters' labels for the same items: agreement beyond what chance gives.

    1 is perfect agreement, 0 is what two raters with the same label frequencies reach by chance. Two
    raters who agree on every item but never vary (chance agreement 1) get 1; otherwise, with chance
    agreement 1, 0."""
    n = len(first)
    if n == 0 or n != len(second):
        raise ValueError("kappa needs two equally long, non-empty lists of labels")
    observed = sum(a == b for a, b in zip(first, second)) / n
    labels = set(first) | set(second)
    chance = sum((list(first).count(label) / n) * (list(second).count(label) / n) for label in labels)
    if chance >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - chance) / (1.0 - chance)


def kappa_interval(first: Sequence[object], second: Sequence[object]) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`cohen_kappa` (resampling the items, deterministic)."""
    return bootstrap_interval(
        lambda idx: cohen_kappa([first[i] for i in idx], [second[i] for i in idx]), len(first), level=0.95
    )


# --------------------------------------------------------------------------- where a classifier errs


def confusion(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """The confusion matrix (rows: gold label, columns: predicted label) and each label's precision,
    recall and support; a label never predicted has precision 0."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted):
        matrix[index[g]][index[p]] += 1
    per_label = {}
    for i, label in enumerate(labels):
        hits = matrix[i][i]
        predicted_as = sum(row[i] for row in matrix)
        support = sum(matrix[i])
        per_label[label] = {
            "precision": hits / predicted_as if predicted_as else 0.0,
            "recall": hits / support if support else 0.0,
            "support": support,
        }
    return {"labels": list(labels), "matrix": matrix, "per_label": per_label}


def position_name(index: int) -> str:
    """A choice's position as a reader names it: A, B, C, ... (then 27, 28, ... past Z)."""
    return chr(ord("A") + index) if index < 26 else str(index + 1)


def by_position(gold: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    """For choices that come with each row: accuracy by the gold answer's position, and how often each
    position was chosen (a model that favours one position shows it here). Its size grows with the most
    choices a row has, never with the rows or the distinct choice texts."""
    positions = max([*gold, *predicted], default=-1) + 1
    at_gold = [0] * positions
    right = [0] * positions
    chosen = [0] * positions
    for g, p in zip(gold, predicted):
        at_gold[g] += 1
        chosen[p] += 1
        right[g] += g == p
    return {
        "positions": [
            {
                "position": position_name(i),
                "gold": at_gold[i],
                "correct": right[i],
                "accuracy": right[i] / at_gold[i] if at_gold[i] else None,
                "chosen": chosen[i],
                "chosen_share": chosen[i] / len(predicted) if predicted else 0.0,
            }
            for i in range(positions)
        ],
        "wrong": sum(g != p for g, p in zip(gold, predicted)),
    }

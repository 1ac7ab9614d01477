"""Confidence intervals for evaluation metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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
    statistic: Callable[[Sequence[int]], float],
    n: int,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` examples (deterministic)."""
    import numpy as np

    if n <= 0:
        return (0.0, 1.0)
    rng = np.random.default_rng(seed)
    values = sorted(statistic(rng.integers(0, n, size=n)) for _ in range(resamples))
    lo = values[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = values[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
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

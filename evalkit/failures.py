"""Why a candidate fails beside its verdict's wording: each threshold it misses, and training data of its
adapter that duplicates golden rows. Shared by prompt candidates (:mod:`evalkit.runner`) and lm-eval ones
(:mod:`evalkit.harness.run`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evalkit.verdict import threshold_failure

if TYPE_CHECKING:
    from evalkit.spec import SuiteSpec
    from evalkit.train import TrainedAdapter


def missed_thresholds(
    spec: SuiteSpec, candidate: str, metrics: dict[str, float], ci: dict[str, tuple[float, float]]
) -> list[str]:
    """Each threshold the candidate misses, of the metrics it reports."""
    return [
        threshold_failure(metric, metrics[metric], ci[metric], t.text)
        for metric, t in spec.thresholds_for(candidate).items()
        if metric in metrics and not t.check(metrics[metric])  # latency: only where measured
    ]


def contamination_failure(adapter: TrainedAdapter | None) -> list[str]:
    """The adapter's training rows that duplicate golden test rows, unless the suite allows them."""
    if adapter is None or not adapter.contamination or adapter.allow_contamination:
        return []
    shown = "; ".join(str(d) for d in adapter.contamination[:5])
    more = f" and {len(adapter.contamination) - 5} more" if len(adapter.contamination) > 5 else ""
    return [
        f"adapter '{adapter.name}' was trained on {len(adapter.contamination)} row(s) that duplicate golden test "
        f"rows ({shown}{more}): remove them from the training data, or set `allow_contamination: true` in its "
        "`train:` entry"
    ]

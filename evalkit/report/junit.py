"""JUnit XML properties of a candidate (pytest's ``record_property``): what a CI dashboard charts."""

from __future__ import annotations

from evalkit.results import CandidateResult


def junit_properties(result: CandidateResult) -> list[tuple[str, object]]:
    props: list[tuple[str, object]] = [("evalkit.n", result.n)]
    for metric, value in result.metrics.items():
        lo, hi = result.ci95[metric]
        props += [(f"evalkit.{metric}", value), (f"evalkit.{metric}.ci95", f"{lo:.4f}-{hi:.4f}")]
    props += [("evalkit.passed", result.passed), ("evalkit.wall_s", result.wall_s)]
    props += [(f"evalkit.cost.{k}", v) for k, v in result.cost.items()]
    props.append(("evalkit.verdict", result.verdict.junit()))
    comparison = result.baseline
    if comparison is not None:
        props.append(("evalkit.baseline.status", comparison.status))
        gate = comparison.gate
        if gate is not None:
            props += [
                (f"evalkit.baseline.{gate.metric}.delta", round(-gate.drop, 6)),
                ("evalkit.baseline.p_value", round(gate.p_value, 6)),
                ("evalkit.baseline.worse", gate.worse),
                ("evalkit.baseline.better", gate.better),
            ]
    return props

"""The table pytest prints after a run: one per suite."""

from __future__ import annotations

from collections.abc import Iterable

from tabulate import tabulate

from evalkit.results import CandidateResult


def _metric_cell(result: CandidateResult, metric: str) -> str:
    lo, hi = result.ci95[metric]
    return f"{result.metrics[metric]:.3f} [{lo:.2f}, {hi:.2f}]"


def _per_example(result: CandidateResult) -> str:
    cost = result.cost
    text = f"{cost['prompt_tokens_per_example']:.0f} tok in"
    if result.tokens["output"]:
        text += f", {cost['output_tokens_per_example']:.0f} out"
    return f"{text}, {cost['ms_per_example']:.0f} ms"


def suite_tables(results: Iterable[CandidateResult]) -> list[str]:
    by_suite: dict[str, list[CandidateResult]] = {}
    for r in results:
        by_suite.setdefault(r.suite, []).append(r)
    tables = []
    for suite, rows in by_suite.items():
        metrics = list(rows[0].metrics)
        headers = ["candidate", "n", *metrics, "threshold", "verdict", "time", "per example"]
        body = []
        for r in rows:
            body.append([
                r.candidate, r.n, *(_metric_cell(r, m) for m in metrics),
                ", ".join(f"{m} {t}" for m, t in r.thresholds.items()) or "-",
                "PASS" if r.passed else "FAIL",
                f"{r.wall_s:.1f}s",
                _per_example(r),
            ])
        title = f"{suite} ({rows[0].task}, model {rows[0].model}; metric [95% CI])"
        tables.append(title + "\n" + tabulate(body, headers=headers, tablefmt="simple"))
    return tables

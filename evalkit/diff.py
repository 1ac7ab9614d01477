"""``evalkit diff RUN_A RUN_B``: the baseline comparison for any two run records."""

from __future__ import annotations

import json
from pathlib import Path

from evalkit.baseline import KIND, read_baseline
from evalkit.compare import Policy, Snapshot, compare
from evalkit.errors import EvalkitError, did_you_mean
from evalkit.record import BaselineUse
from evalkit.report.markdown import render_summary
from evalkit.results import load_run, rows_by_candidate, run_order
from evalkit.verdict import regression_failure, without_regression


def resolve_run(name: str, reports: Path) -> Path:
    """A run named on the command line: a path, 'latest', 'baseline', or a run id under reports/runs."""
    path = Path(name)
    if path.exists():
        return path
    if name == "latest":
        return reports / "latest"
    if name == "baseline":
        return reports / "baseline.json"
    candidate = reports / "runs" / name
    if candidate.exists():
        return candidate
    runs = (
        sorted((p.name for p in (reports / "runs").glob("*") if p.is_dir()), key=run_order)
        if (reports / "runs").is_dir()
        else []
    )
    raise EvalkitError(
        f"no run '{name}'{did_you_mean(name, [*runs, 'latest', 'baseline'])}",
        path=reports,
        fix="name a run folder, its results.json, 'latest', 'baseline', or a run id"
        + (f" (newest: {', '.join(runs[-3:])})" if runs else ""),
    )


def _is_baseline(path: Path) -> bool:
    if path.is_dir() or path.suffix != ".json" or path.name == "results.json":
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def _snapshots(path: Path) -> dict[tuple[str, str], Snapshot]:
    if _is_baseline(path):
        baseline = read_baseline(path)
        return dict(baseline.entries) if baseline else {}
    record, rows = load_run(path)
    by_candidate = rows_by_candidate(rows)
    return {
        (suite, name): Snapshot.from_entry(entry, by_candidate.get((suite, name), []), suite=suite, candidate=name)
        for suite, name, entry in record.entries()
    }


def diff_runs(
    run_a: str,
    run_b: str,
    *,
    reports: Path,
    max_drop: float | None = None,
    alpha: float | None = None,
    strict: bool | None = None,
    html: Path | None = None,
) -> tuple[str, bool]:
    """The markdown comparison of run B against run A, and whether any candidate of B regressed.

    ``html`` also writes the comparison as a report.html page there."""
    path_a, path_b = resolve_run(run_a, reports), resolve_run(run_b, reports)
    if _is_baseline(path_b):
        raise EvalkitError(
            "RUN_B must be a run record, not a baseline",
            path=path_b,
            fix="put the baseline first: evalkit diff baseline latest",
        )
    reference = _snapshots(path_a)
    record, rows = load_run(path_b)
    by_candidate = rows_by_candidate(rows)
    overrides = {k: v for k, v in {"max_drop": max_drop, "alpha": alpha, "strict": strict}.items() if v is not None}
    regressed = False
    for suite, name, entry in record.entries():
        # the suite's policy when run B ran
        recorded = entry.baseline.policy.model_dump() if entry.baseline and entry.baseline.policy else {}
        policy = Policy(**{**recorded, **overrides})
        current = Snapshot.from_entry(entry, by_candidate.get((suite, name), []), suite=suite, candidate=name)
        comparison = compare(current, reference.get((suite, name)), policy)
        failures = without_regression(entry.failures)
        if comparison.regressed:
            failures.append(regression_failure(comparison.reason or ""))
            regressed = True
        entry.baseline, entry.failures, entry.passed = comparison, failures, not failures
    record.run.baseline = BaselineUse(path=run_a, updated=False)
    record.run.run_id = f"{record.run.run_id or path_b} vs {run_a}"
    if html is not None:
        from evalkit.atomic import write_text_atomically
        from evalkit.report.html import render_html

        write_text_atomically(html, render_html(record, rows))
    return render_summary(record, rows), regressed

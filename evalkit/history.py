"""How each candidate evolved across the run folders kept under ``reports/runs/``: its gated metric in every
run, and what changed (prompt, data, model, adapter, judge) where it changed. ``evalkit history`` prints it
and report.html draws it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tabulate import tabulate

from evalkit.compare import HASH_NAMES
from evalkit.errors import EvalkitError
from evalkit.record import CandidateEntry, RunRecord
from evalkit.results import read_results, run_order

LAST_RUNS = 10


def _runs(runs_dir: Path) -> list[Path]:
    if not runs_dir.is_dir():
        return []
    folders = [p for p in runs_dir.iterdir() if p.is_dir() and (p / "results.json").is_file()]
    return sorted(folders, key=lambda p: run_order(p.name))


def _changes(before: CandidateEntry | None, now: CandidateEntry) -> list[str]:
    """What differs between two runs of a candidate, by the hashes of what produced them."""
    if before is None:
        return []
    old, new = before.hashes(), now.hashes()
    changed = [label for key, label in HASH_NAMES.items() if key != "prompts" and old.get(key) != new.get(key)]
    if not changed and old.get("prompts") != new.get("prompts"):
        changed.append("rendered prompts")
    return changed


def read_history(
    runs_dir: Path, *, current: RunRecord | None = None, last: int = LAST_RUNS, suite: str | None = None
) -> dict[str, Any]:
    """The last ``last`` complete runs (``current``, a run record not written yet, as the newest), by suite:
    ``{suite: {"runs": [run ids], "candidates": {name: [point or None per run]}}}``. Runs limited to
    their first rows are left out (they measure other examples); damaged ones too."""
    records = []
    for folder in _runs(runs_dir):
        try:
            records.append(read_results(folder))
        except EvalkitError:
            continue
    if current is not None:
        records = [r for r in records if r.run.run_id != current.run.run_id] + [current]
    records = [r for r in records if not r.run.row_limit][-last:]
    history: dict[str, Any] = {}
    for index, record in enumerate(records):
        for name, entries in record.suites.items():
            if suite is not None and name != suite:
                continue
            shown = history.setdefault(name, {"runs": [], "candidates": {}, "last_entry": {}})
            shown["runs"].append(record.run.run_id or f"run {index + 1}")
            for candidate, entry in entries.items():
                points = shown["candidates"].setdefault(candidate, [])
                points += [None] * (len(shown["runs"]) - 1 - len(points))
                policy = entry.baseline.policy if entry.baseline is not None else None
                metric = policy.metric if policy is not None else "accuracy"
                if metric not in entry.metrics:
                    metric = "accuracy"
                points.append(
                    {
                        "metric": metric,
                        "value": entry.metrics[metric],
                        "ci95": list(entry.ci95[metric]),
                        "changed": _changes(shown["last_entry"].get(candidate), entry),
                    }
                )
                shown["last_entry"][candidate] = entry
    for shown in history.values():
        del shown["last_entry"]
        for points in shown["candidates"].values():
            points += [None] * (len(shown["runs"]) - len(points))
    return history


def history_table(history: dict[str, Any]) -> str:
    """``evalkit history``: one table per suite, a row per run, a column per candidate; a change is marked
    with a letter and explained under the table."""
    if not history:
        return "no complete runs under the reports folder yet: run `pytest suites/` first\n"
    out = []
    for suite, shown in history.items():
        names = list(shown["candidates"])
        notes: list[str] = []
        rows = []
        for i, run_id in enumerate(shown["runs"]):
            cells = [run_id]
            for name in names:
                point = shown["candidates"][name][i]
                if point is None:
                    cells.append("-")
                    continue
                lo, hi = point["ci95"]
                cell = f"{point['value']:.3f} [{lo:.2f}, {hi:.2f}]"
                if point["changed"]:
                    notes.append(f"({len(notes) + 1}) {name} in {run_id}: {', '.join(point['changed'])} changed")
                    cell += f" ({len(notes)})"
                cells.append(cell)
            rows.append(cells)
        metric = next((p["metric"] for ps in shown["candidates"].values() for p in ps if p), "accuracy")
        table = tabulate(rows, headers=["run", *names], tablefmt="simple", disable_numparse=True)
        out.append(f"{suite} ({metric} [95% CI], oldest run first)\n{table}" + "".join(f"\n{n}" for n in notes))
    return "\n\n".join(out) + "\n"

"""Writing a run folder: ``reports/runs/<run id>/`` with every report rendered from the run record, and
``reports/latest/`` as its copy; old runs pruned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from evalkit.atomic import replace_directory, staging_directory
from evalkit.history import read_history
from evalkit.report.html import render_html
from evalkit.report.markdown import render_summary
from evalkit.results import run_order


def _write_files(directory: Path, files: dict[str, str]) -> None:
    """Write ``files`` (name -> text) as the whole content of ``directory``, replacing it atomically."""
    tmp = staging_directory(directory)
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def render_run(
    record: dict[str, Any], rows: list[dict[str, Any]], history: dict[str, Any] | None = None
) -> dict[str, str]:
    """Every file of a run folder, rendered from the record and its example rows (and for report.html,
    the history of the runs before it)."""
    return {
        "results.json": json.dumps(record, indent=2, ensure_ascii=False) + "\n",
        "examples.jsonl": "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
        "summary.md": render_summary(record, rows),
        "report.html": render_html(record, rows, history),
    }


def write_run(reports_dir: Path, record: dict[str, Any], rows: list[dict[str, Any]], *, keep_runs: int = 20) -> Path:
    """Write ``reports/runs/<run id>/`` and make ``reports/latest/`` a copy of it; prune old runs.

    Each folder is staged and renamed into place, so a reader never sees half a run. ``keep_runs`` = 0
    keeps every run."""
    files = render_run(record, rows, read_history(reports_dir / "runs", current=record))
    run_dir = reports_dir / "runs" / record["run"]["run_id"]
    _write_files(run_dir, files)
    _write_files(reports_dir / "latest", files)
    if keep_runs > 0:
        prune_runs(reports_dir / "runs", keep_runs)
    return run_dir


def prune_runs(runs_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` run folders (by id, which sorts by start time)."""
    runs = sorted(
        (p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "results.json").exists()),
        key=lambda p: run_order(p.name),
    )
    removed = runs[:-keep] if len(runs) > keep else []
    for old in removed:
        shutil.rmtree(old, ignore_errors=True)
    return removed

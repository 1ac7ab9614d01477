"""Writing a run folder: ``reports/runs/<run id>/`` with every report rendered from the run record, and
``reports/latest/`` as its copy; old runs pruned."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from evalkit.atomic import replace_directory, staging_directory
from evalkit.history import read_history
from evalkit.record import RunRecord
from evalkit.report.html import html_parts
from evalkit.report.markdown import render_summary
from evalkit.results import run_order


def _stage(directory: Path, write: Callable[[Path], None]) -> None:
    """Fill a staging folder with ``write`` and make it the whole content of ``directory``, atomically."""
    tmp = staging_directory(directory)
    try:
        write(tmp)
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_examples(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """``examples.jsonl``, written a row at a time (never the whole file as one string)."""
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False))
            out.write("\n")


def render_files(
    folder: Path, record: RunRecord, rows: Iterable[dict[str, Any]], history: dict[str, Any] | None = None
) -> None:
    """Every file of a run folder, rendered into ``folder`` from the record and its example rows (and for
    report.html, the history of the runs before it). ``rows`` is read once per file that needs it."""
    text = json.dumps(record.as_json(), indent=2, ensure_ascii=False)
    (folder / "results.json").write_text(text + "\n", encoding="utf-8")
    write_examples(folder / "examples.jsonl", rows)
    (folder / "summary.md").write_text(render_summary(record, rows), encoding="utf-8")
    with (folder / "report.html").open("w", encoding="utf-8") as page:  # written in pieces, never whole
        page.writelines(html_parts(record, rows, history))


def write_run(reports_dir: Path, record: RunRecord, rows: Iterable[dict[str, Any]], *, keep_runs: int = 20) -> Path:
    """Write ``reports/runs/<run id>/`` and make ``reports/latest/`` a copy of it; prune old runs.

    Each folder is staged and renamed into place, so a reader never sees half a run. ``keep_runs`` = 0
    keeps every run."""
    history = read_history(reports_dir / "runs", current=record)
    run_dir = reports_dir / "runs" / str(record.run.run_id)
    _stage(run_dir, lambda folder: render_files(folder, record, rows, history))
    _stage(reports_dir / "latest", lambda folder: _copy_files(run_dir, folder))
    if keep_runs > 0:
        prune_runs(reports_dir / "runs", keep_runs)
    return run_dir


def _copy_files(source: Path, folder: Path) -> None:
    for path in source.iterdir():
        shutil.copyfile(path, folder / path.name)


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

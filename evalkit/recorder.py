"""The end of a run: its header, the run record built once (results.json, and what the terminal, summary.md,
report.html and JUnit read), the run folder written, and the baseline written when asked."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.gatekeeper import BaselineGate
from evalkit.pairs import paired_tables
from evalkit.record import BaselineUse, GoldenReads, RunInfo, RunRecord
from evalkit.report.writer import write_run
from evalkit.results import CandidateResult, build_record, example_rows, new_run_id, run_info


@dataclass
class RunRecorder:
    """Writes ``reports_dir/runs/<run id>/`` (and ``latest/``) from a run's results, keeping
    ``keep_runs`` runs (0: all); ``prices`` (evalkit.costs.CostModel) adds what each candidate costs."""

    root: Path
    reports_dir: Path
    started: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.UTC))
    keep_runs: int = 20
    prices: Any = None
    record: RunRecord | None = None  # results.json as written, built once at the end of the run
    written: Path | None = None  # the run folder written
    error: str | None = None  # why the run record or the baseline could not be written

    def shown(self, path: Path) -> str:
        """``path`` as the reports name it: relative to the project root where it lies inside it."""
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def summary(self, results: list[CandidateResult]) -> RunRecord:
        """The run record (once it is built; before that, built for the terminal alone)."""
        return (
            self.record
            if self.record is not None
            else with_pairs(build_record(RunInfo(), results, self.prices), results)
        )

    def write(
        self,
        results: list[CandidateResult],
        gate: BaselineGate,
        *,
        row_limit: int | None,
        limited: list[str],
        incomplete: str | None = None,
        golden: dict[str, GoldenReads] | None = None,
    ) -> Path:
        """Write the run folder, and the baseline when ``gate`` is asked to; ``incomplete`` says why this
        run does not cover every suite and candidate (a baseline is then refused unless merging); ``golden``:
        how often each suite's golden set has been read (evalkit.golden)."""
        run = run_info(self.root, self.started, _dt.datetime.now(_dt.UTC))
        run.run_id = new_run_id(self.reports_dir / "runs", self.started)
        run.row_limit = row_limit
        run.baseline = BaselineUse(path=self.shown(gate.path), updated=False)
        baseline_error = None
        if gate.update is not None:
            try:
                written = gate.write(
                    results,
                    run,
                    root=self.root,
                    shown={r.suite: self.shown(Path(r.suite_path)) for r in results},
                    incomplete=incomplete,
                    row_limit=row_limit,
                    limited=limited,
                )
                run.baseline = BaselineUse(path=run.baseline.path, updated=True, mode=gate.update, candidates=written)
            except EvalkitError as error:
                baseline_error = error
        self.record = with_pairs(build_record(run, results, self.prices), results)  # once: every report reads this one
        if golden:
            self.record.golden = golden
        try:
            self.written = write_run(self.reports_dir, self.record, example_rows(results), keep_runs=self.keep_runs)
        except OSError as exc:
            raise EvalkitError(
                f"cannot write the run record: {exc.strerror}",
                path=self.reports_dir,
                fix="make the reports folder writable, or move it with --evalkit-reports",
            ) from None
        if baseline_error is not None:
            raise baseline_error
        return self.written


def with_pairs(record: RunRecord, results: list[CandidateResult]) -> RunRecord:
    """``record`` with each suite's paired table (every pair of its runs, see evalkit.pairs)."""
    tables = paired_tables(results)
    if tables:
        record.pairs = tables
    return record

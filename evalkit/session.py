"""One evaluation session: models loaded once, datasets read once, results kept for the report."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.backends import open_backend
from evalkit.backends.base import Backend
from evalkit.baseline import Baseline, read_baseline, write_baseline
from evalkit.compare import Policy, Snapshot, compare
from evalkit.errors import EvalkitError, ModelError
from evalkit.report.writer import write_run
from evalkit.results import CandidateResult, build_record, example_rows, new_run_id, run_header
from evalkit.runner import Resources, evaluate_candidate
from evalkit.spec import ModelConfig, SuiteSpec
from evalkit.suite import load_suite
from evalkit.verdict import regression_failure

if TYPE_CHECKING:
    from evalkit.train import TrainMode


class RunCoverage:
    """Which candidates this run selected, left out, or could not use: a baseline needs a complete run."""

    def __init__(self) -> None:
        self.selected: set[str] = set()  # "suite::candidate" of every selected candidate item
        self.deselected: set[str] = set()
        self.invalid: set[str] = set()  # suite files that could not be used

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "selected": sorted(self.selected),
            "deselected": sorted(self.deselected),
            "invalid": sorted(self.invalid),
        }

    def update(self, data: dict[str, list[str]]) -> None:
        self.selected.update(data["selected"])
        self.deselected.update(data["deselected"])
        self.invalid.update(data["invalid"])

    def incomplete(self, produced: set[str]) -> str | None:
        """Why the run does not cover its suites completely, or None."""
        reasons = []
        if self.deselected:
            reasons.append(f"{len(self.deselected)} candidate(s) deselected, e.g. {sorted(self.deselected)[0]}")
        if self.invalid:
            reasons.append(f"unusable suite file(s): {', '.join(sorted(self.invalid))}")
        missing = sorted(self.selected - produced)
        if missing:
            reasons.append(f"{len(missing)} candidate(s) without a result, e.g. {missing[0]}")
        return "; ".join(reasons) or None


@dataclass
class LoadedModel:
    name: str
    fingerprint: str
    load_s: float
    served_at: str | None = None  # the server's URL, for a model a server answers for

    def describe(self) -> str:
        if self.served_at is not None:
            return f"model {self.name} ({self.fingerprint}) served at {self.served_at}"
        return f"model {self.name} ({self.fingerprint}) loaded in {self.load_s:.1f}s"


@dataclass
class EvalSession:
    root: Path
    reports_dir: Path
    limit: int | None = None
    notify: Callable[[str], None] | None = None  # shows a message to the user right away
    started: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.UTC))
    results: dict[tuple[str, str], CandidateResult] = field(default_factory=dict)
    _backends: dict[tuple, tuple[str, Backend]] = field(default_factory=dict)
    _datasets: dict = field(default_factory=dict)
    _specs: dict[Path, SuiteSpec] = field(default_factory=dict)
    _limits: dict[tuple[str, str], int | None] = field(default_factory=dict)
    train_mode: TrainMode = "auto"  # auto: train missing or stale adapters; never: that is an error; always: retrain
    _adapters: dict[tuple[Path, str], Any] = field(default_factory=dict)
    baseline_path: Path | None = None  # default: <reports_dir>/baseline.json
    update_baseline: str | None = None  # None: gate on the baseline; "replace" or "merge": write it from this run
    keep_runs: int = 20  # run folders kept under reports/runs (0: all)
    _baseline: Any = None  # Baseline | None | EvalkitError, read on first use
    _baseline_read: bool = False
    written: Path | None = None  # the run folder written at the end of the session
    cache_dir: Path | None = None  # the result cache's folder; None: no cache
    _cache: Any = None  # ResultCache, opened on first use
    coverage: RunCoverage = field(default_factory=RunCoverage)
    report_error: str | None = None  # why the run record or the baseline could not be written
    prices: Any = None  # the cost model (evalkit.costs.CostModel) that prices each candidate; None: no prices
    progress: Callable[[str], Any] | None = None  # a live line per candidate (evalkit.progress), on a terminal
    run_record: dict[str, Any] | None = None  # results.json as written, built once at the end of the run

    @property
    def baseline_file(self) -> Path:
        """The baseline compared with and written: ``baseline_path``, else <reports_dir>/baseline.json."""
        return self.baseline_path if self.baseline_path is not None else self.reports_dir / "baseline.json"

    @property
    def models(self) -> list[LoadedModel]:
        """The models whose weights this session loaded, in the order they were first asked for."""
        return [
            LoadedModel(name, backend.fingerprint, backend.load_s, backend.served_at)
            for name, backend in self._backends.values()
            if backend.load_s is not None
        ]

    def baseline(self) -> Baseline | None:
        """The committed baseline (None when there is none yet); a damaged one raises EvalkitError."""
        if not self._baseline_read:
            try:
                self._baseline = read_baseline(self.baseline_file)
            except EvalkitError as error:
                self._baseline = error
            self._baseline_read = True
        if isinstance(self._baseline, EvalkitError):
            raise self._baseline
        return self._baseline

    def backend_for(self, model: ModelConfig, base_dir: Path) -> Backend:
        """The shared backend for ``model``, built on first use (without loading weights) and reused by
        every suite; it loads its weights when an answer first needs them."""
        key = (model.model_dump_json(), str(base_dir))
        if key not in self._backends:
            backend = open_backend(model, base_dir, notify=self.notify)
            same = next((b for _, b in self._backends.values() if b.sharing_key() == backend.sharing_key()), None)
            self._backends[key] = (model.name, same or backend)
        return self._backends[key][1]

    def result_cache(self):
        """The result cache shared by every suite of the session (None when caching is off)."""
        if self._cache is None and self.cache_dir is not None:
            from evalkit.cache import ResultCache

            self._cache = ResultCache(self.cache_dir, warn=self.notify)
        return self._cache

    def resources(self) -> Resources:
        """What this session's evaluations share: backends, adapters, datasets and the result cache."""
        return Resources(
            backend=self.backend_for,
            adapter=self.adapter,
            cache=self.result_cache(),
            datasets=self._datasets,
            baseline_outputs=self._baseline_outputs,
            progress=self.progress,
        )

    def _baseline_outputs(self, suite: str, candidate: str) -> dict[str, str]:
        """The committed baseline's outputs of a candidate by example id (as the baseline keeps them: the
        first 300 characters); empty without a baseline entry."""
        baseline = self.baseline()
        reference = baseline.get(suite, candidate) if baseline is not None else None
        return {o.id: o.output for o in reference.outcomes.values()} if reference is not None else {}

    def close(self) -> None:
        """Close the result cache and release every backend."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        for _, backend in self._backends.values():
            backend.close()

    def adapter(self, spec: SuiteSpec, name: str):
        """Adapter ``name`` of ``spec``, trained at most once per session (per ``train_mode``)."""
        key = (spec.path, name)
        if key not in self._adapters:
            from evalkit.train import ensure_adapter

            self._adapters[key] = ensure_adapter(
                spec, name, mode=self.train_mode, notify=self.notify, reports_dir=self.reports_dir
            )
        return self._adapters[key]

    def find_adapter(self, name: str, suite: str | Path | None = None):
        """The adapter ``name`` from the given suite file, or from the one suite seen this session that defines it."""
        if suite is not None:
            return self.adapter(self.spec(self.suite_path(suite)), name)
        owners = [spec for spec in self._specs.values() if name in spec.train]
        if not owners:
            for path in sorted(self.root.glob("suites/**/*.eval.yaml")):
                try:
                    spec = self.spec(path)
                except EvalkitError:
                    continue
                if name in spec.train:
                    owners.append(spec)
        if len(owners) != 1:
            where = ", ".join(str(o.path) for o in owners) if owners else "no suite"
            raise EvalkitError(
                f"adapter '{name}' is defined by {where}",
                fix="name the suite: trained_adapter(name, suite='suites/<file>.eval.yaml')",
            )
        return self.adapter(owners[0], name)

    def suite_path(self, suite: str | Path) -> Path:
        """A suite named by a user: as given when it exists, else relative to the project root."""
        path = Path(suite)
        if not path.is_absolute() and not path.exists():
            path = self.root / path
        return path

    def spec(self, path: Path) -> SuiteSpec:
        path = path.resolve()
        if path not in self._specs:
            self._specs[path] = load_suite(path)
        return self._specs[path]

    def run(self, spec: SuiteSpec, candidate: str, *, limit: int | None = None) -> CandidateResult:
        """Evaluate (suite, candidate) once per session; later calls return the same result.

        ``limit`` evaluates only the first rows (as does the session-wide ``--evalkit-limit``)."""
        limits = [x for x in (self.limit, limit) if x is not None]
        row_limit = min(limits) if limits else None
        key = (spec.name, candidate)
        cached = self.results.get(key)
        if cached is None or self._limits.get(key) != row_limit:
            try:
                result = evaluate_candidate(spec, candidate, self.resources(), limit=row_limit)
            except ModelError as error:  # name the suite line that chose the model
                raise error.located(spec.path, spec.model_line) from None
            self._compare_with_baseline(spec, result)
            self.results[key] = result
            self._limits[key] = row_limit
        return self.results[key]

    def _compare_with_baseline(self, spec: SuiteSpec, result: CandidateResult) -> None:
        """Attach the comparison with the baseline; a significant regression fails the candidate."""
        try:
            baseline = self.baseline()
        except EvalkitError:
            if self.update_baseline == "replace":  # about to be replaced: nothing to compare with
                return
            raise
        if baseline is None:
            return
        reference = baseline.get(result.suite, result.candidate)
        result.baseline = compare(Snapshot.from_result(result), reference, Policy(**spec.baseline.model_dump()))
        if result.baseline.regressed and self.update_baseline is None:
            result.failures.append(regression_failure(result.baseline.reason or ""))

    # ------------------------------------------------------------------ pytest-xdist workers

    def worker_output(self) -> dict[str, str]:
        """What an xdist worker hands to the controller: its results, their row limits and its coverage."""
        return {
            "evalkit_results": json.dumps([r.to_dict() for r in self.results.values()]),
            "evalkit_limits": json.dumps([[s, c, limit] for (s, c), limit in self._limits.items()]),
            "evalkit_coverage": json.dumps(self.coverage.as_dict()),
        }

    def merge_worker(self, output: dict[str, str]) -> None:
        """Take in a worker's :meth:`worker_output`, as if this process had run its candidates."""
        if output.get("evalkit_coverage"):
            self.coverage.update(json.loads(output["evalkit_coverage"]))
        for suite, candidate, limit in json.loads(output.get("evalkit_limits") or "[]"):
            self._limits[(suite, candidate)] = limit
        for data in json.loads(output.get("evalkit_results") or "[]"):
            result = CandidateResult.from_dict(data)
            self.results[(result.suite, result.candidate)] = result

    # ------------------------------------------------------------------ the end of the run

    def finish(self) -> bool:
        """Write the run folder (and the baseline when asked); False when that failed (see report_error)."""
        if not self.results:
            return True
        produced = {f"{suite}::{candidate}" for suite, candidate in self.results}
        try:
            self.write_reports(incomplete=self.coverage.incomplete(produced))
        except EvalkitError as error:
            self.report_error = str(error)
            return False
        return True

    def summary_lines(self, *, verbose: bool) -> list[tuple[str, str | None]]:
        """What the terminal shows after the run: (line, colour or None)."""
        from evalkit.report.terminal import cache_lines, suite_tables

        lines: list[tuple[str, str | None]] = [
            (line, None) for line in cache_lines(self.results.values(), self.cache_dir, verbose=verbose)
        ]
        lines += [(m.describe(), None) for m in self.models]
        if self.limit:
            lines.append((f"only the first {self.limit} rows of each suite (--evalkit-limit)", None))
        ordered = self._ordered()
        record = self.run_record if self.run_record is not None else build_record({}, ordered, self.prices)
        for table in suite_tables(ordered, record.get("costs")):
            lines += [("", None), (table, None)]
        lines.append(("", None))
        if self.update_baseline is not None and self.report_error is None:
            lines.append((f"baseline written: {self.baseline_file}", "green"))
        elif not any(r.baseline is not None for r in self.results.values()):
            if self.update_baseline is None:
                lines.append(
                    (
                        f"no baseline at {self.baseline_file}: nothing is compared yet (pytest suites/ "
                        "--evalkit-update-baseline writes one)",
                        None,
                    )
                )
        else:
            lines.append((f"compared with the baseline {self.baseline_file}", None))
        if self.written is not None:
            lines.append(
                (
                    f"run record: {self.written}/ (also {self.reports_dir / 'latest'}/): results.json, "
                    "examples.jsonl, summary.md, report.html",
                    None,
                )
            )
        if self.report_error is not None:
            lines.append((f"evalkit: {self.report_error}", "red"))
        return lines

    def write_reports(self, *, incomplete: str | None = None) -> Path | None:
        """Write the run folder (and the baseline when asked). ``incomplete`` says why this run does not
        cover every suite and candidate it should (a baseline is then refused unless merging)."""
        if not self.results:
            return None
        finished = _dt.datetime.now(_dt.UTC)
        header = run_header(self.root, self.started, finished)
        header["run_id"] = new_run_id(self.reports_dir / "runs", self.started)
        header["row_limit"] = self.limit
        ordered = self._ordered()
        baseline_error = None
        header["baseline"] = {"path": self._shown(self.baseline_file), "updated": False}
        if self.update_baseline is not None:
            try:
                written = self._write_baseline(ordered, header, incomplete)
                header["baseline"].update(updated=True, mode=self.update_baseline, candidates=written)
            except EvalkitError as error:
                baseline_error = error
        self.run_record = build_record(header, ordered, self.prices)  # once: every report reads this one
        try:
            self.written = write_run(self.reports_dir, self.run_record, example_rows(ordered), keep_runs=self.keep_runs)
        except OSError as exc:
            raise EvalkitError(
                f"cannot write the run record: {exc.strerror}",
                path=self.reports_dir,
                fix="make the reports folder writable, or move it with --evalkit-reports",
            ) from None
        if baseline_error is not None:
            raise baseline_error
        return self.written

    def _ordered(self) -> list[CandidateResult]:
        return sorted(self.results.values(), key=lambda r: (r.suite, r.candidate))

    def _shown(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def _write_baseline(self, results: list[CandidateResult], header: dict[str, Any], incomplete: str | None) -> int:
        merge = self.update_baseline == "merge"
        if self.limit is not None:
            raise EvalkitError(
                "baseline not written: --evalkit-limit evaluated only the first rows of each suite",
                path=self.baseline_file,
                fix="update the baseline from a run without --evalkit-limit",
            )
        limited = sorted(f"{s}::{c}" for (s, c), row_limit in self._limits.items() if row_limit is not None)
        if limited and incomplete is None:
            incomplete = f"{', '.join(limited)} evaluated only the first rows (evalkit.run(..., limit=N))"
        old = None
        try:
            old = self.baseline()
        except EvalkitError:
            if merge:
                raise
        if old is not None:  # a suite in the baseline whose file still exists but did not run
            ran = {r.suite for r in results}
            skipped = sorted(s for s, rel in old.suite_paths.items() if s not in ran and (self.root / rel).exists())
            if skipped and incomplete is None:
                incomplete = f"suite(s) {', '.join(skipped)} are in the baseline but did not run"
        if incomplete is not None and not merge:
            raise EvalkitError(
                f"baseline not written: this run covered only part of the suites ({incomplete})",
                path=self.baseline_file,
                fix="run every suite (pytest suites/ --evalkit-update-baseline), or keep the other entries and "
                "replace only what ran with --evalkit-merge-baseline",
            )
        suite_paths = {r.suite: self._shown(Path(r.suite_path)) for r in results}
        baseline_header = {
            "written": header["finished"],
            "git_commit": header["git_commit"],
            "evalkit_version": header["evalkit_version"],
        }
        return write_baseline(
            self.baseline_file,
            [Snapshot.from_result(r) for r in results],
            suite_paths,
            baseline_header,
            merge_into=old if merge else None,
        )

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
from evalkit.errors import EvalkitError, ModelError
from evalkit.gatekeeper import BaselineGate, UpdateMode
from evalkit.golden import GoldenCount, ledger_path
from evalkit.record import RetentionCheck, RunRecord
from evalkit.recorder import RunRecorder
from evalkit.results import CandidateResult
from evalkit.runner import Resources, evaluate_candidate
from evalkit.spec import ModelConfig, SuiteSpec
from evalkit.suite import load_suite, suites_defining, the_suite_defining
from evalkit.verdict import expected_failure

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
    """What one pytest run shares: its settings, the backends, adapters, datasets and result cache every
    suite uses (one :class:`Resources`), and each candidate's result. The baseline gate
    (:class:`BaselineGate`) and the writing of the run (:class:`RunRecorder`) are objects of their own."""

    root: Path
    reports_dir: Path
    limit: int | None = None
    notify: Callable[[str], None] | None = None  # shows a message to the user right away
    started: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.UTC))
    results: dict[tuple[str, str], CandidateResult] = field(default_factory=dict)
    train_mode: TrainMode = "auto"  # auto: train missing or stale adapters; never: that is an error; always: retrain
    baseline_path: Path | None = None  # default: <reports_dir>/baseline.json
    update_baseline: UpdateMode | None = None  # None: gate on the baseline; "replace" or "merge": write it
    keep_runs: int = 20  # run folders kept under reports/runs (0: all)
    cache_dir: Path | None = None  # the result cache's folder; None: no cache
    coverage: RunCoverage = field(default_factory=RunCoverage)
    prices: Any = None  # the cost model (evalkit.costs.CostModel) that prices each candidate; None: no prices
    progress: Callable[[str], Any] | None = None  # a live line per candidate (evalkit.progress), on a terminal
    _backends: dict[tuple, tuple[str, Backend]] = field(default_factory=dict)
    _specs: dict[Path, SuiteSpec] = field(default_factory=dict)
    _limits: dict[tuple[str, str], int | None] = field(default_factory=dict)
    _adapters: dict[tuple[Path, str], Any] = field(default_factory=dict)
    _retained: dict[tuple[str, str], list[RetentionCheck]] = field(default_factory=dict)  # by (suite, adapter)
    _resources: Resources | None = None

    def __post_init__(self) -> None:
        self.gate = BaselineGate(self.baseline_file, self.update_baseline)
        self.recorder = RunRecorder(self.root, self.reports_dir, self.started, self.keep_runs, self.prices)
        self.golden = GoldenCount(ledger_path(self.reports_dir))  # how often each golden set has been read

    @property
    def baseline_file(self) -> Path:
        """The baseline compared with and written: ``baseline_path``, else <reports_dir>/baseline.json."""
        return self.baseline_path if self.baseline_path is not None else self.reports_dir / "baseline.json"

    @property
    def written(self) -> Path | None:
        """The run folder written at the end of the session."""
        return self.recorder.written

    @property
    def report_error(self) -> str | None:
        """Why the run record or the baseline could not be written."""
        return self.recorder.error

    @property
    def run_record(self) -> RunRecord | None:
        """results.json as written (built once, at the end of the run)."""
        return self.recorder.record

    @property
    def models(self) -> list[LoadedModel]:
        """The models whose weights this session loaded, in the order they were first asked for."""
        return [
            LoadedModel(name, backend.fingerprint, backend.load_s, backend.served_at)
            for name, backend in self._backends.values()
            if backend.load_s is not None
        ]

    def baseline(self):
        """The committed baseline (None when there is none yet); a damaged one raises EvalkitError."""
        return self.gate.baseline()

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
        return self.resources().cache

    def resources(self) -> Resources:
        """What this session's evaluations share (made once): backends, adapters, datasets, the result
        cache, the baseline's outputs for a pairwise judge, and the live progress line."""
        if self._resources is None:
            cache = None
            if self.cache_dir is not None:
                from evalkit.cache import ResultCache

                cache = ResultCache(self.cache_dir, warn=self.notify)
            self._resources = Resources(
                backend=self.backend_for,
                adapter=self.adapter,
                cache=cache,
                baseline_outputs=self.gate.outputs,
                progress=self.progress,
                search_mode=self.train_mode,  # a prompt search follows the adapters' policy
                notify=self.notify,
            )
        return self._resources

    def close(self) -> None:
        """Close the result cache and release every backend."""
        if self._resources is not None and self._resources.cache is not None:
            self._resources.cache.close()
            self._resources.cache = None
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
            owners = suites_defining(name, sorted(self.root.glob("suites/**/*.eval.yaml")), load=self.spec)
        fix = "name the suite: trained_adapter(name, suite='suites/<file>.eval.yaml')"
        return self.adapter(the_suite_defining(name, owners, searched="", fix=fix), name)

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
                raise error.located(spec.path, spec.model_line_of(candidate)) from None
            self.gate.check(spec, result)
            result.expected_failure = expected_failure(spec.candidates[candidate].all_markers)
            self.golden.observe(result, spec.max_reads, limited=row_limit is not None)
            searched = self.resources().prompt_searches.get(key)
            if searched is not None:  # the best dev score against this one read of the golden set
                result.prompt_search = searched.info(result.accuracy, result.ci95["accuracy"])
            self.results[key] = result
            self._limits[key] = row_limit
            self._compare(spec, candidate, result, row_limit)
            self._attach_retention()
        return self.results[key]

    def retention(self, spec: SuiteSpec, adapter: str) -> list[RetentionCheck]:
        """What ``adapter`` of ``spec`` forgot on its `retention:` suites: checked once per session (its test,
        `retention[ADAPTER]`, asks), and kept on the results of the candidates that use it, for the reports.
        A candidate's own run never waits for it, nor fails with it."""
        key = (spec.name, adapter)
        if key not in self._retained:
            from evalkit.harness.retention import check_retention

            settings = spec.retention_of(adapter)
            assert settings is not None, f"adapter '{adapter}' has no retention check"
            self._retained[key] = check_retention(
                spec,
                self.adapter(spec, adapter),
                settings,
                load=self.spec,
                run_base=lambda standard, base: self.run(standard, base, limit=self.limit),
                resources=self.resources(),
                limit=self.limit,
            )
        self._attach_retention()
        return self._retained[key]

    def _attach_retention(self) -> None:
        """Each adapter's retention checks on the results of the candidates that use it (in this process, or
        handed over by an xdist worker)."""
        for result in self.results.values():
            name = result.adapter.name if result.adapter is not None else None
            if name is not None and (result.suite, name) in self._retained:
                result.retention = self._retained[(result.suite, name)]

    def _compare(self, spec: SuiteSpec, candidate: str, result: CandidateResult, row_limit: int | None) -> None:
        """The suite's `compare:` checks of ``candidate`` against their references (run first when needed):
        each check's outcome kept on the result, and its failures made the candidate's."""
        checks = spec.checks_of(candidate)
        if not checks:
            return
        from evalkit.pairs import check_pair

        compared = []
        for check in checks:
            reference = self.run(spec, check.reference, limit=row_limit)
            line = spec.compare_line(spec.compare.index(check))
            outcome = check_pair(check, result, reference, path=spec.path, line=line)
            compared.append(outcome)
            result.failures.extend(outcome.failures)
        result.compared = compared

    # ------------------------------------------------------------------ pytest-xdist workers

    def worker_output(self) -> dict[str, str]:
        """What an xdist worker hands to the controller: its results, their row limits and its coverage."""
        return {
            "evalkit_results": json.dumps([r.to_dict() for r in self.results.values()]),
            "evalkit_limits": json.dumps([[s, c, limit] for (s, c), limit in self._limits.items()]),
            "evalkit_coverage": json.dumps(self.coverage.as_dict()),
            "evalkit_retention": json.dumps(
                [
                    [suite, adapter, [c.model_dump(mode="json") for c in checks]]
                    for (suite, adapter), checks in self._retained.items()
                ]
            ),
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
        for suite, adapter, checks in json.loads(output.get("evalkit_retention") or "[]"):
            self._retained[(suite, adapter)] = [RetentionCheck.model_validate(c) for c in checks]
        self._attach_retention()

    # ------------------------------------------------------------------ the end of the run

    def ordered(self) -> list[CandidateResult]:
        """Every result, by suite and candidate."""
        return sorted(self.results.values(), key=lambda r: (r.suite, r.candidate))

    def finish(self) -> bool:
        """Write the run folder (and the baseline when asked); False when that failed (see report_error)."""
        if not self.results:
            return True
        produced = {f"{suite}::{candidate}" for suite, candidate in self.results}
        try:
            self.write_reports(incomplete=self.coverage.incomplete(produced))
        except EvalkitError as error:
            self.recorder.error = str(error)
            return False
        return True

    def write_reports(self, *, incomplete: str | None = None) -> Path | None:
        """Write the run folder (and the baseline when asked). ``incomplete`` says why this run does not
        cover every suite and candidate it should (a baseline is then refused unless merging)."""
        if not self.results:
            return None
        limited_keys = {key for key, row_limit in self._limits.items() if row_limit is not None}
        limited = sorted(f"{s}::{c}" for s, c in limited_keys)
        results = self.ordered()
        budgets = {r.suite: self.spec(Path(r.suite_path)).max_reads for r in results}
        golden = self.golden.suites(results, budgets, limited_keys)
        try:
            return self.recorder.write(
                results, self.gate, row_limit=self.limit, limited=limited, incomplete=incomplete, golden=golden
            )
        finally:
            if self.recorder.written is not None and self.recorder.record is not None:  # the run folder exists
                self.golden.write(str(self.recorder.record.run.run_id))

    def summary_lines(self, *, verbose: bool) -> list[tuple[str, str | None]]:
        """What the terminal shows after the run: (line, colour or None)."""
        return session_lines(self, verbose=verbose)


def session_lines(session: EvalSession, *, verbose: bool) -> list[tuple[str, str | None]]:
    """What the terminal shows after a run: the cache, the models, a table per suite, where the baseline
    and the run record are (each line with its colour, or None)."""
    from evalkit.report.terminal import cache_lines, suite_tables

    lines: list[tuple[str, str | None]] = [
        (line, None) for line in cache_lines(session.results.values(), session.cache_dir, verbose=verbose)
    ]
    lines += [(m.describe(), None) for m in session.models]
    if session.limit:
        lines.append((f"only the first {session.limit} rows of each suite (--evalkit-limit)", None))
    ordered = session.ordered()
    record = session.recorder.summary(ordered)
    for table in suite_tables(ordered, record, verbose=verbose):
        lines += [("", None), (table, None)]
    lines.append(("", None))
    for reads in (record.golden or {}).values():  # a golden set past its budget, in colour
        if reads.over_budget and reads.message is not None:
            lines.append((reads.message, "red" if reads.strict else "yellow"))
    lines += _where_lines(session)
    return lines


def _where_lines(session: EvalSession) -> list[tuple[str, str | None]]:
    lines: list[tuple[str, str | None]] = []
    if session.update_baseline is not None and session.report_error is None:
        lines.append((f"baseline written: {session.baseline_file}", "green"))
    elif not any(r.baseline is not None for r in session.results.values()):
        if session.update_baseline is None:
            lines.append(
                (
                    f"no baseline at {session.baseline_file}: nothing is compared yet (pytest suites/ "
                    "--evalkit-update-baseline writes one)",
                    None,
                )
            )
    else:
        lines.append((f"compared with the baseline {session.baseline_file}", None))
    if session.written is not None:
        lines.append(
            (
                f"run record: {session.written}/ (also {session.reports_dir / 'latest'}/): results.json, "
                "examples.jsonl, summary.md, report.html",
                None,
            )
        )
    if session.report_error is not None:
        lines.append((f"evalkit: {session.report_error}", "red"))
    return lines

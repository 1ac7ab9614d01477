"""pytest hooks and fixtures: collect ``*.eval.yaml`` suites as one item per candidate.

Only wiring lives here; the work is done by :mod:`evalkit.session` and the modules it calls. This module
is imported by every pytest run in the environment, so it imports nothing heavy at load time.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from evalkit.errors import EvalkitError, shown_path

if TYPE_CHECKING:
    from evalkit.results import CandidateResult
    from evalkit.session import EvalSession
    from evalkit.suite import SuiteSpec

SESSION_KEY = pytest.StashKey["EvalSession"]()
SUITE_NAMES_KEY = pytest.StashKey[dict]()
WRITTEN_KEY = pytest.StashKey[Path]()
COVERAGE_KEY = pytest.StashKey["RunCoverage"]()
REPORT_ERROR_KEY = pytest.StashKey[str]()
SUITE_SUFFIX = ".eval.yaml"
TRAIN_MODES = ("auto", "never", "always")  # evalkit.train.TRAIN_MODES, repeated to keep this import light


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("evalkit", "evalkit: evaluation suites (*.eval.yaml)")
    group.addoption("--evalkit-reports", dest="evalkit_reports", metavar="DIR", default=None,
                    help="folder for run records (default: the evalkit_reports ini value, else <rootdir>/reports)")
    group.addoption("--evalkit-limit", dest="evalkit_limit", metavar="N", type=int, default=None,
                    help="evaluate only the first N rows of every suite (a quick smoke run)")
    group.addoption("--evalkit-train", dest="evalkit_train", choices=TRAIN_MODES, default=None,
                    help="adapters a suite uses: auto (default) trains a missing or stale one, never makes that an "
                         "error (CI that must not train), always retrains")
    group.addoption("--evalkit-baseline", dest="evalkit_baseline", metavar="FILE", default=None,
                    help="baseline to compare with (default: the evalkit_baseline ini value, else <reports>/baseline.json)")
    group.addoption("--evalkit-update-baseline", dest="evalkit_update_baseline", action="store_true",
                    help="write the baseline from this run (refused unless every suite and candidate ran); "
                         "regressions are reported but do not fail")
    group.addoption("--evalkit-merge-baseline", dest="evalkit_merge_baseline", action="store_true",
                    help="like --evalkit-update-baseline, but replace only the candidates that ran and keep the rest")
    group.addoption("--evalkit-keep-runs", dest="evalkit_keep_runs", metavar="N", type=int, default=None,
                    help="run folders to keep under <reports>/runs (default: the evalkit_keep_runs ini value, 20; 0 keeps all)")
    group.addoption("--evalkit-no-cache", dest="evalkit_no_cache", action="store_true",
                    help="compute every answer with the model: neither read nor write the result cache")
    group.addoption("--evalkit-cache-dir", dest="evalkit_cache_dir", metavar="DIR", default=None,
                    help="result cache folder (default: the evalkit_cache_dir ini value, else <rootdir>/.evalkit_cache)")
    parser.addini("evalkit_reports", "folder for run records, relative to the rootdir", default="reports")
    parser.addini("evalkit_cache_dir", "result cache folder, relative to the rootdir", default=".evalkit_cache")
    parser.addini("evalkit_train", "auto, never or always (see --evalkit-train)", default="auto")
    parser.addini("evalkit_baseline", "baseline file, relative to the rootdir (default: <reports>/baseline.json)",
                  default="")
    parser.addini("evalkit_keep_runs", "run folders to keep under <reports>/runs (0 keeps all)", default="20")


def pytest_configure(config: pytest.Config) -> None:
    from evalkit.session import EvalSession

    config.addinivalue_line("markers", "evalkit: an evaluation suite candidate collected from *.eval.yaml")
    reports = config.getoption("evalkit_reports") or config.getini("evalkit_reports")
    limit = config.getoption("evalkit_limit")
    if limit is not None and limit < 1:
        raise pytest.UsageError("--evalkit-limit must be a positive number of rows")
    train_mode = config.getoption("evalkit_train") or config.getini("evalkit_train")
    if train_mode not in TRAIN_MODES:
        raise pytest.UsageError(f"evalkit_train = {train_mode!r}: use one of {', '.join(TRAIN_MODES)}")
    def notify(message: str) -> None:
        """Show ``message`` now, even while pytest captures the output of the running item."""
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line("")
            reporter.write_line(message, yellow=True)

    baseline = config.getoption("evalkit_baseline") or config.getini("evalkit_baseline") or None
    keep_runs = config.getoption("evalkit_keep_runs")
    if keep_runs is None:
        try:
            keep_runs = int(config.getini("evalkit_keep_runs"))
        except ValueError:
            raise pytest.UsageError(f"evalkit_keep_runs = {config.getini('evalkit_keep_runs')!r}: use a whole number") from None
    if keep_runs < 0:
        raise pytest.UsageError("--evalkit-keep-runs must be 0 (keep all) or a positive number")
    update = ("merge" if config.getoption("evalkit_merge_baseline")
              else "replace" if config.getoption("evalkit_update_baseline") else None)
    config.stash[SESSION_KEY] = EvalSession(
        root=config.rootpath, reports_dir=config.rootpath / reports, limit=limit, notify=notify,
        train_mode=train_mode, baseline_path=config.rootpath / baseline if baseline else None,
        update_baseline=update, keep_runs=keep_runs,
        cache_dir=None if config.getoption("evalkit_no_cache")
        else config.rootpath / (config.getoption("evalkit_cache_dir") or config.getini("evalkit_cache_dir")))
    config.stash[SUITE_NAMES_KEY] = {}
    config.stash[COVERAGE_KEY] = RunCoverage()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistMerge(config), "evalkit-xdist")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith(SUITE_SUFFIX):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class SuiteFile(pytest.File):
    """A suite file: one item per candidate, or one failing item naming the mistake."""

    def collect(self):
        session: EvalSession = self.config.stash[SESSION_KEY]
        try:
            spec = session.spec(self.path)
        except EvalkitError as error:
            yield InvalidSuiteItem.from_parent(self, name="suite", error=error)
            return
        names = self.config.stash[SUITE_NAMES_KEY]
        other = names.setdefault(spec.name, self.path)
        if other != self.path:
            error = EvalkitError(f"suite name '{spec.name}' is also used by {shown_path(other)}", path=self.path,
                                 line=spec.name_line,
                                 fix="give every suite a distinct `suite:` name; reports are keyed by it")
            yield InvalidSuiteItem.from_parent(self, name="suite", error=error)
            return
        for name, candidate in spec.candidates.items():
            item = CandidateItem.from_parent(self, name=name, spec=spec)
            item.add_marker("evalkit")
            for marker in candidate.markers:
                item.add_marker(marker)
            item.extra_keyword_matches.add(spec.name)
            yield item


class ThresholdFailure(Exception):
    def __init__(self, result: CandidateResult) -> None:
        super().__init__(result.failures)
        self.result = result


class CandidateItem(pytest.Item):
    def __init__(self, *, spec: SuiteSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def runtest(self) -> None:
        session: EvalSession = self.config.stash[SESSION_KEY]
        result = session.run(self.spec, self.name)
        self.user_properties.extend(junit_properties(result))
        if not result.passed:
            raise ThresholdFailure(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None):
        if isinstance(excinfo.value, ThresholdFailure):
            r = excinfo.value.result
            return failure_message(r)
        if isinstance(excinfo.value, EvalkitError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        line = self.spec.candidates[self.name].line
        return self.path, (line - 1) if line else None, f"{self.spec.name}::{self.name}"


def _outcome(value: float) -> str:
    return "right" if value >= 1 else "wrong" if value <= 0 else f"pass rate {value:.2f}"


def failure_message(r: CandidateResult, shown: int = 5) -> str:
    """Why a candidate failed: each failure, then the examples that flipped (or were wrong)."""
    lines = [f"{r.suite}::{r.candidate} failed ({r.n} examples):"]
    lines += [f"  {failure}" for failure in r.failures]
    comparison = r.baseline or {}
    if comparison.get("regressed") and comparison.get("changes"):
        lines.append(f"  since the baseline: {'; '.join(comparison['changes'])}")
    worse = [f for f in comparison.get("flipped", []) if f["direction"] == "worse"] if comparison.get("regressed") else []
    if worse:
        by_id = {e.id: e for e in r.examples}
        lines.append(f"first examples that got worse ({len(worse)} in all; every flip is in reports/latest/summary.md):")
        for flip in worse[:shown]:
            e = by_id[flip["id"]]
            lines.append(f"  {e.id}: {flip['baseline_output']!r} -> {e.output!r} "
                         f"({_outcome(flip['baseline'])} -> {_outcome(flip['current'])}), expected {e.target!r}")
        return "\n".join(lines)
    wrong = [e for e in r.examples if not e.correct][:3]
    if wrong:
        lines.append("first wrong examples:")
        for e in wrong:
            lines.append(f"  {e.id}: predicted {e.output!r}, expected {e.target!r}")
    return "\n".join(lines)


class InvalidSuiteItem(pytest.Item):
    """Stands for a suite file that cannot be used, so the other suites still run."""

    def __init__(self, *, error: EvalkitError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def runtest(self) -> None:
        raise self.error

    def repr_failure(self, excinfo, style=None):
        return str(excinfo.value)

    def reportinfo(self):
        return self.path, None, f"invalid suite {self.path.name}"


class RunCoverage:
    """Which candidates this run selected, left out, or could not use: a baseline needs a complete run."""

    def __init__(self) -> None:
        self.selected: set[str] = set()  # "suite::candidate" of every selected candidate item
        self.deselected: set[str] = set()
        self.invalid: set[str] = set()  # suite files that could not be used

    def as_dict(self) -> dict[str, list[str]]:
        return {"selected": sorted(self.selected), "deselected": sorted(self.deselected), "invalid": sorted(self.invalid)}

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


def _item_key(item: pytest.Item) -> str | None:
    if isinstance(item, CandidateItem):
        return f"{item.spec.name}::{item.name}"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    """A broken suite file is reported whatever `-k` or `-m` selects, as pytest reports a module that fails to
    import: its item is set aside while the selection runs, and put back first."""
    invalid = [item for item in items if isinstance(item, InvalidSuiteItem)]
    items[:] = [item for item in items if not isinstance(item, InvalidSuiteItem)]
    try:
        return (yield)
    finally:
        items[:0] = invalid


def pytest_deselected(items: list[pytest.Item]) -> None:
    for item in items:
        key = _item_key(item)
        if key is not None:
            item.config.stash[COVERAGE_KEY].deselected.add(key)


def pytest_collection_finish(session: pytest.Session) -> None:
    coverage: RunCoverage = session.config.stash[COVERAGE_KEY]
    for item in session.items:
        key = _item_key(item)
        if key is not None:
            coverage.selected.add(key)
        elif isinstance(item, InvalidSuiteItem):
            coverage.invalid.add(str(item.path))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A hand-written test whose `evalkit` fixture call hit a mistake in a suite shows the message, and the test
    line that made the call, instead of a traceback through evalkit."""
    report = yield
    error = call.excinfo.value if call.excinfo is not None else None
    if report.failed and isinstance(error, EvalkitError) and not isinstance(item, (CandidateItem, InvalidSuiteItem)):
        lines = [entry.lineno + 1 for entry in call.excinfo.traceback if Path(entry.path) == item.path]
        where = f"{shown_path(item.path)}:{lines[-1]}" if lines else item.nodeid
        report.longrepr = f"{where}: the suite it evaluates cannot be used:\n{error}"
    return report


def junit_properties(result: CandidateResult) -> list[tuple[str, object]]:
    props: list[tuple[str, object]] = [("evalkit.n", result.n)]
    for metric, value in result.metrics.items():
        lo, hi = result.ci95[metric]
        props += [(f"evalkit.{metric}", value), (f"evalkit.{metric}.ci95", f"{lo:.4f}-{hi:.4f}")]
    props += [("evalkit.passed", result.passed), ("evalkit.wall_s", result.wall_s)]
    props += [(f"evalkit.cost.{k}", v) for k, v in result.cost.items()]
    props.append(("evalkit.verdict", "pass" if result.passed else "fail"))
    comparison = result.baseline
    if comparison is not None:
        props.append(("evalkit.baseline.status", comparison["status"]))
        gate = comparison.get("gate")
        if gate:
            props += [(f"evalkit.baseline.{gate['metric']}.delta", round(-gate["drop"], 6)),
                      ("evalkit.baseline.p_value", round(gate["p_value"], 6)),
                      ("evalkit.baseline.worse", gate["worse"]), ("evalkit.baseline.better", gate["better"])]
    return props


@pytest.fixture
def trained_adapter(request: pytest.FixtureRequest):
    """``trained_adapter("tickets-lora")``: the adapter, trained first if missing or stale (--evalkit-train).

    Pass ``suite="suites/x.eval.yaml"`` when more than one suite could define the name."""
    session: EvalSession = request.config.stash[SESSION_KEY]

    def get(name: str, suite: str | Path | None = None):
        return session.find_adapter(name, suite)

    return get


@pytest.fixture
def evalkit(request: pytest.FixtureRequest) -> "EvalkitFixture":
    """Run suites from hand-written tests: ``evalkit.run("suites/x.eval.yaml", candidate="few_shot")``."""
    return EvalkitFixture(request.config)


class EvalkitFixture:
    def __init__(self, config: pytest.Config) -> None:
        self._session: EvalSession = config.stash[SESSION_KEY]

    def suite(self, suite: str | Path) -> SuiteSpec:
        return self._session.spec(self._session.suite_path(suite))

    def run(self, suite: str | Path, candidate: str, *, limit: int | None = None) -> CandidateResult:
        """Evaluate ``candidate`` of ``suite`` (memoised for the session) and return its result.

        ``limit`` evaluates only the first rows of the dataset."""
        return self._session.run(self.suite(suite), candidate, limit=limit)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    session: EvalSession = config.stash.get(SESSION_KEY, None)
    if session is None or not session.results:
        return
    from evalkit.report.terminal import cache_lines, suite_tables

    terminalreporter.section("evalkit results")
    for line in cache_lines(session.results.values(), session.cache_dir, verbose=config.getoption("verbose") > 0):
        terminalreporter.write_line(line)
    for model in session.models:
        terminalreporter.write_line(f"model {model.name} ({model.fingerprint}) loaded in {model.load_s:.1f}s")
    if session.limit:
        terminalreporter.write_line(f"only the first {session.limit} rows of each suite (--evalkit-limit)")
    for table in suite_tables(sorted(session.results.values(), key=lambda r: (r.suite, r.candidate))):
        terminalreporter.write_line("")
        terminalreporter.write_line(table)
    written = config.stash.get(WRITTEN_KEY, None)
    terminalreporter.write_line("")
    baseline = session.baseline_path
    if session.update_baseline is not None and config.stash.get(REPORT_ERROR_KEY, None) is None:
        terminalreporter.write_line(f"baseline written: {baseline}", green=True)
    elif not any(r.baseline is not None for r in session.results.values()):
        if session.update_baseline is None:
            terminalreporter.write_line(
                f"no baseline at {baseline}: nothing is compared yet (pytest suites/ --evalkit-update-baseline writes one)")
    else:
        terminalreporter.write_line(f"compared with the baseline {baseline}")
    if written is not None:
        latest = session.reports_dir / "latest"
        terminalreporter.write_line(f"run record: {written}/ (also {latest}/): results.json, examples.jsonl, "
                                    f"summary.md, report.html")
    error = config.stash.get(REPORT_ERROR_KEY, None)
    if error is not None:
        terminalreporter.write_line(f"evalkit: {error}", red=True)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    evalsession: EvalSession = config.stash.get(SESSION_KEY, None)
    if evalsession is None:
        return
    coverage: RunCoverage = config.stash[COVERAGE_KEY]
    if hasattr(config, "workerinput"):  # an xdist worker: hand results to the controller
        config.workeroutput["evalkit_results"] = json.dumps([asdict(r) for r in evalsession.results.values()])
        config.workeroutput["evalkit_coverage"] = json.dumps(coverage.as_dict())
        return
    if not evalsession.results:
        return
    produced = {f"{suite}::{candidate}" for suite, candidate in evalsession.results}
    try:
        evalsession.write_reports(incomplete=coverage.incomplete(produced))
    except EvalkitError as error:
        config.stash[REPORT_ERROR_KEY] = str(error)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if evalsession.written is not None:
        config.stash[WRITTEN_KEY] = evalsession.written


def _result_from_dict(data: dict) -> CandidateResult:
    from evalkit.results import CandidateResult, ExampleResult

    data = dict(data)
    data["examples"] = [ExampleResult(**e) for e in data["examples"]]
    data["ci95"] = {k: tuple(v) for k, v in data["ci95"].items()}
    return CandidateResult(**data)


class _XdistMerge:
    """Collects the results that xdist workers publish, so the controller writes one run record."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_testnodedown(self, node, error) -> None:
        output = getattr(node, "workeroutput", {})
        if output.get("evalkit_coverage"):
            self.config.stash[COVERAGE_KEY].update(json.loads(output["evalkit_coverage"]))
        payload = output.get("evalkit_results")
        if not payload:
            return
        session: EvalSession = self.config.stash[SESSION_KEY]
        for data in json.loads(payload):
            result = _result_from_dict(data)
            session.results[(result.suite, result.candidate)] = result

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

from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    from evalkit.results import CandidateResult
    from evalkit.session import EvalSession
    from evalkit.suite import SuiteSpec

SESSION_KEY = pytest.StashKey["EvalSession"]()
SUITE_NAMES_KEY = pytest.StashKey[dict]()
WRITTEN_KEY = pytest.StashKey[Path]()
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
    parser.addini("evalkit_reports", "folder for run records, relative to the rootdir", default="reports")
    parser.addini("evalkit_train", "auto, never or always (see --evalkit-train)", default="auto")


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

    config.stash[SESSION_KEY] = EvalSession(
        root=config.rootpath, reports_dir=config.rootpath / reports, limit=limit, notify=notify,
        train_mode=train_mode)
    config.stash[SUITE_NAMES_KEY] = {}
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
            error = EvalkitError(f"suite name '{spec.name}' is also used by {other}", path=self.path, line=1,
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
            lines = [f"{r.suite}::{r.candidate} failed ({r.n} examples):"]
            lines += [f"  {failure}" for failure in r.failures]
            wrong = [e for e in r.examples if not e.correct][:3]
            if wrong:
                lines.append("first wrong examples:")
                for e in wrong:
                    lines.append(f"  {e.id}: predicted {e.output!r}, expected {e.target!r}")
            return "\n".join(lines)
        if isinstance(excinfo.value, EvalkitError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        line = self.spec.candidates[self.name].line
        return self.path, (line - 1) if line else None, f"{self.spec.name}::{self.name}"


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


def junit_properties(result: CandidateResult) -> list[tuple[str, object]]:
    props: list[tuple[str, object]] = [("evalkit.n", result.n)]
    for metric, value in result.metrics.items():
        lo, hi = result.ci95[metric]
        props += [(f"evalkit.{metric}", value), (f"evalkit.{metric}.ci95", f"{lo:.4f}-{hi:.4f}")]
    props += [("evalkit.passed", result.passed), ("evalkit.wall_s", result.wall_s)]
    props += [(f"evalkit.cost.{k}", v) for k, v in result.cost.items()]
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
    from evalkit.report.terminal import suite_tables

    terminalreporter.section("evalkit results")
    for model in session.models:
        terminalreporter.write_line(f"model {model.name} ({model.fingerprint}) loaded in {model.load_s:.1f}s")
    if session.limit:
        terminalreporter.write_line(f"only the first {session.limit} rows of each suite (--evalkit-limit)")
    for table in suite_tables(sorted(session.results.values(), key=lambda r: (r.suite, r.candidate))):
        terminalreporter.write_line("")
        terminalreporter.write_line(table)
    written = config.stash.get(WRITTEN_KEY, None)
    if written is not None:
        terminalreporter.write_line("")
        terminalreporter.write_line(f"run record: {written}/results.json, {written}/examples.jsonl")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    evalsession: EvalSession = config.stash.get(SESSION_KEY, None)
    if evalsession is None or not evalsession.results:
        return
    if hasattr(config, "workerinput"):  # an xdist worker: hand results to the controller
        config.workeroutput["evalkit_results"] = json.dumps(
            [asdict(r) for r in evalsession.results.values()])
        return
    try:
        written = evalsession.write_reports()
        if written is not None:
            config.stash[WRITTEN_KEY] = written
    except EvalkitError as error:
        config.get_terminal_writer().line(f"evalkit: {error}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
        payload = getattr(node, "workeroutput", {}).get("evalkit_results")
        if not payload:
            return
        session: EvalSession = self.config.stash[SESSION_KEY]
        for data in json.loads(payload):
            result = _result_from_dict(data)
            session.results[(result.suite, result.candidate)] = result

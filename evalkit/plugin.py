"""pytest hooks and fixtures: collect ``*.eval.yaml`` suites as one item per candidate.

Only wiring lives here; the work is done by :mod:`evalkit.session` and the modules it calls. This module
is imported by every pytest run in the environment, so it imports nothing heavy at load time.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from evalkit.errors import EvalkitError, shown_path

if TYPE_CHECKING:
    from evalkit.results import CandidateResult
    from evalkit.session import EvalSession
    from evalkit.spec import SuiteSpec

SESSION_KEY = pytest.StashKey["EvalSession"]()
SUITE_NAMES_KEY = pytest.StashKey[dict]()
REPORTER_NAME = "evalkit-reporter"
XDIST_NAME = "evalkit-xdist"
SUITE_SUFFIX = ".eval.yaml"
TRAIN_MODES = ("auto", "never", "always")  # evalkit.train.TRAIN_MODES, repeated to keep this import light


OPTIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "--evalkit-reports",
        dict(
            metavar="DIR",
            help="folder for run records (default: the evalkit_reports ini value, else <rootdir>/reports)",
        ),
    ),
    (
        "--evalkit-limit",
        dict(metavar="N", type=int, help="evaluate only the first N rows of every suite (a quick smoke run)"),
    ),
    (
        "--evalkit-train",
        dict(
            choices=TRAIN_MODES,
            help="adapters a suite uses: auto (default) trains a missing or "
            "stale one, never makes that an error (CI that must not train), always retrains",
        ),
    ),
    (
        "--evalkit-baseline",
        dict(
            metavar="FILE",
            help="baseline to compare with (default: the evalkit_baseline ini value, else <reports>/baseline.json)",
        ),
    ),
    (
        "--evalkit-update-baseline",
        dict(
            action="store_true",
            help="write the baseline from this run (refused unless "
            "every suite and candidate ran); regressions are reported but do not fail",
        ),
    ),
    (
        "--evalkit-merge-baseline",
        dict(
            action="store_true",
            help="like --evalkit-update-baseline, but replace only the candidates that ran and keep the rest",
        ),
    ),
    (
        "--evalkit-keep-runs",
        dict(
            metavar="N",
            type=int,
            help="run folders to keep under <reports>/runs (default: the evalkit_keep_runs ini value, 20; 0 keeps all)",
        ),
    ),
    (
        "--evalkit-no-cache",
        dict(action="store_true", help="compute every answer with the model: neither read nor write the result cache"),
    ),
    (
        "--evalkit-cache-dir",
        dict(
            metavar="DIR",
            help="result cache folder (default: the evalkit_cache_dir ini value, else <rootdir>/.evalkit_cache)",
        ),
    ),
]
INI: list[tuple[str, str, str]] = [
    ("evalkit_reports", "folder for run records, relative to the rootdir", "reports"),
    ("evalkit_cache_dir", "result cache folder, relative to the rootdir", ".evalkit_cache"),
    ("evalkit_train", "auto, never or always (see --evalkit-train)", "auto"),
    ("evalkit_baseline", "baseline file, relative to the rootdir (default: <reports>/baseline.json)", ""),
    ("evalkit_keep_runs", "run folders to keep under <reports>/runs (0 keeps all)", "20"),
    (
        "evalkit_datasets_mirror",
        "folder of hub datasets as <hub id>/<config>/<split>.jsonl for `lm_eval:` suites, relative to the rootdir "
        "(the EVALKIT_DATASETS_MIRROR variable wins)",
        "",
    ),
    (
        "evalkit_allowed_hosts",
        "hosts (or host:port, * wildcards) a served model may be reached at besides loopback; never in a suite",
        "",
    ),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("evalkit", "evalkit: evaluation suites (*.eval.yaml)")
    for flag, settings in OPTIONS:
        dest = flag.removeprefix("--").replace("-", "_")
        group.addoption(flag, dest=dest, **({"default": None} if "action" not in settings else {}), **settings)
    for name, help_text, default in INI:
        parser.addini(name, help_text, default=default)


def _notifier(config: pytest.Config):
    def notify(message: str) -> None:
        """Show ``message`` now, even while pytest captures the output of the running item."""
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line("")
            reporter.write_line(message, yellow=True)

    return notify


def _session_settings(config: pytest.Config) -> dict[str, Any]:
    """The EvalSession's settings from the command line and the ini file; UsageError on a bad value."""
    limit = config.getoption("evalkit_limit")
    if limit is not None and limit < 1:
        raise pytest.UsageError("--evalkit-limit must be a positive number of rows")
    train_mode = config.getoption("evalkit_train") or config.getini("evalkit_train")
    if train_mode not in TRAIN_MODES:
        raise pytest.UsageError(f"evalkit_train = {train_mode!r}: use one of {', '.join(TRAIN_MODES)}")
    keep_runs = config.getoption("evalkit_keep_runs")
    if keep_runs is None:
        try:
            keep_runs = int(config.getini("evalkit_keep_runs"))
        except ValueError:
            raise pytest.UsageError(
                f"evalkit_keep_runs = {config.getini('evalkit_keep_runs')!r}: use a whole number"
            ) from None
    if keep_runs < 0:
        raise pytest.UsageError("--evalkit-keep-runs must be 0 (keep all) or a positive number")
    root = config.rootpath
    baseline = config.getoption("evalkit_baseline") or config.getini("evalkit_baseline") or None
    cache = config.getoption("evalkit_cache_dir") or config.getini("evalkit_cache_dir")
    return dict(
        root=root,
        reports_dir=root / (config.getoption("evalkit_reports") or config.getini("evalkit_reports")),
        limit=limit,
        train_mode=train_mode,
        keep_runs=keep_runs,
        baseline_path=root / baseline if baseline else None,
        update_baseline="merge"
        if config.getoption("evalkit_merge_baseline")
        else "replace"
        if config.getoption("evalkit_update_baseline")
        else None,
        cache_dir=None if config.getoption("evalkit_no_cache") else root / cache,
        prices=_prices(root / "pyproject.toml"),
    )


def _prices(pyproject: Path) -> Any:
    """The project's ``[tool.evalkit.costs]`` (evalkit.costs); a malformed table stops the run at start-up."""
    from evalkit.costs import read_cost_model
    from evalkit.errors import EvalkitError

    try:
        return read_cost_model(pyproject)
    except EvalkitError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_configure(config: pytest.Config) -> None:
    from evalkit.backends.hosts import allow
    from evalkit.session import EvalSession

    allow(str(config.getini("evalkit_allowed_hosts")))
    mirror = str(config.getini("evalkit_datasets_mirror"))
    if mirror:
        from evalkit.harness.loading import set_mirror_option

        set_mirror_option(str(config.rootpath / mirror))
    config.addinivalue_line("markers", "evalkit: an evaluation suite candidate collected from *.eval.yaml")
    session = EvalSession(notify=_notifier(config), progress=_live_lines(config), **_session_settings(config))
    config.stash[SESSION_KEY] = session
    config.stash[SUITE_NAMES_KEY] = {}
    config.pluginmanager.register(EvalkitReporter(config, session), REPORTER_NAME)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistMerge(session), XDIST_NAME)


def _live_lines(config: pytest.Config) -> Any:
    """A factory of live progress lines, one per candidate, drawn over the terminal's current line and
    cleared when the candidate is done; None when there is no terminal to draw on (output piped, -q, or an
    xdist worker, whose output the controller collects)."""
    if config.get_verbosity() < 0 or hasattr(config, "workerinput"):
        return None

    def line_for(label: str):
        from evalkit.progress import Progress

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        writer: Any = getattr(reporter, "_tw", None)
        stream = getattr(writer, "_file", None)
        if reporter is None or not getattr(reporter, "isatty", False) or stream is None:
            return Progress(label, lambda line: None)

        capture = config.pluginmanager.get_plugin("capturemanager")

        def show(line: str | None) -> None:
            # Written past pytest's writer, which keeps the line it drew, so clearing redraws that line; and
            # past output capturing, as pytest's live logging does.
            text = getattr(writer, "_current_line", "") if line is None else line[: writer.fullwidth - 1]
            with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
                stream.write("\r\x1b[K" + text)
                stream.flush()

        return Progress(label, show)

    return line_for


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in (REPORTER_NAME, XDIST_NAME):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin)
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()
    if "torch" in sys.modules:
        _settle_the_heap()


def _settle_the_heap() -> None:
    """Collect the run's garbage once, then freeze what is left (torch's and transformers' many objects).

    The interpreter's exit and pytest's own garbage collections would otherwise walk those objects again
    and again (about a second at the end of every run that loaded a model). The one collection here runs
    while pytest still reports exceptions raised by finalizers. Frozen objects are still released by
    reference counting; only cycles among them are left to the process's exit."""
    gc.collect()
    gc.freeze()


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
        except EvalkitError as unusable:
            yield InvalidSuiteItem.from_parent(self, name="suite", error=unusable)
            return
        names = self.config.stash[SUITE_NAMES_KEY]
        other = names.setdefault(spec.name, self.path)
        if other != self.path:
            error = EvalkitError(
                f"suite name '{spec.name}' is also used by {shown_path(other)}",
                path=self.path,
                line=spec.name_line,
                fix="give every suite a distinct `suite:` name; reports are keyed by it",
            )
            yield InvalidSuiteItem.from_parent(self, name="suite", error=error)
            return
        for name, candidate in spec.candidates.items():
            item = CandidateItem.from_parent(self, name=name, spec=spec)
            item.add_marker("evalkit")
            _add_markers(item, candidate.all_markers)
            item.extra_keyword_matches.add(spec.name)
            yield item
        yield from _retention_items(self, spec)


def _add_markers(item: pytest.Item, markers: Any) -> None:
    """A suite's markers on its item: a name, or a name with its keyword arguments."""
    for marker in markers:
        if isinstance(marker, dict):
            ((name, arguments),) = marker.items()
            item.add_marker(getattr(pytest.mark, name)(**arguments))
        else:
            item.add_marker(marker)


def _retention_items(parent: SuiteFile, spec: SuiteSpec):
    """One test per adapter with a `retention:` check that some candidate uses: what it forgot."""
    for adapter in dict.fromkeys(c.adapter for c in spec.candidates.values() if c.adapter is not None):
        settings = spec.retention_of(adapter)
        if settings is None:
            continue
        item = RetentionItem.from_parent(parent, name=f"retention[{adapter}]", spec=spec, adapter=adapter)
        _add_markers(item, settings.markers)
        item.extra_keyword_matches.update({spec.name, adapter, "retention"})
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
        from evalkit.report.junit import junit_properties

        result = session.run(self.spec, self.name)
        self.user_properties.extend(junit_properties(result))
        if not result.passed:
            raise ThresholdFailure(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None):
        if isinstance(excinfo.value, ThresholdFailure):
            from evalkit.report.terminal import failure_text

            return failure_text(excinfo.value.result)
        if isinstance(excinfo.value, EvalkitError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    @property
    def key(self) -> str:
        return f"{self.spec.name}::{self.name}"

    def reportinfo(self):
        line = self.spec.candidates[self.name].line
        return self.path, (line - 1) if line else None, f"{self.spec.name}::{self.name}"


class RetentionLoss(Exception):
    pass


class RetentionItem(pytest.Item):
    """An adapter's retention check: fails when it lost significantly on one of its standard suites."""

    def __init__(self, *, spec: SuiteSpec, adapter: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec, self.adapter = spec, adapter

    def runtest(self) -> None:
        from evalkit.harness.retention import retention_failure

        session: EvalSession = self.config.stash[SESSION_KEY]
        lost = [retention_failure(check) for check in session.retention(self.spec, self.adapter) if check.lost]
        if lost:
            raise RetentionLoss("\n".join(lost))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None):
        if isinstance(excinfo.value, (RetentionLoss, EvalkitError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        line = self.spec.train[self.adapter].line if self.adapter in self.spec.train else None
        return self.path, (line - 1) if line else None, f"{self.spec.name}::retention[{self.adapter}]"


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A hand-written test whose `evalkit` fixture call hit a mistake in a suite shows the message, and the test
    line that made the call, instead of a traceback through evalkit."""
    report = yield
    excinfo = call.excinfo
    error = excinfo.value if excinfo is not None else None
    if report.failed and isinstance(error, EvalkitError) and not isinstance(item, (CandidateItem, InvalidSuiteItem)):
        lines = [entry.lineno + 1 for entry in excinfo.traceback if Path(entry.path) == item.path]  # type: ignore[union-attr]
        where = f"{shown_path(item.path)}:{lines[-1]}" if lines else item.nodeid
        report.longrepr = f"{where}: the suite it evaluates cannot be used:\n{error}"
    return report


@pytest.fixture
def trained_adapter(request: pytest.FixtureRequest):
    """``trained_adapter("tickets-lora")``: the adapter, trained first if missing or stale (--evalkit-train).

    Pass ``suite="suites/x.eval.yaml"`` when more than one suite could define the name."""
    session: EvalSession = request.config.stash[SESSION_KEY]

    def get(name: str, suite: str | Path | None = None):
        return session.find_adapter(name, suite)

    return get


@pytest.fixture
def evalkit(request: pytest.FixtureRequest) -> EvalkitFixture:
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


class EvalkitReporter:
    """The run-level hooks: which candidates the run covers, the run folder at the end, the summary."""

    def __init__(self, config: pytest.Config, session: EvalSession) -> None:
        self.config = config
        self.session = session

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.session.coverage.deselected.update(i.key for i in items if isinstance(i, CandidateItem))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        coverage = self.session.coverage
        coverage.selected.update(i.key for i in session.items if isinstance(i, CandidateItem))
        coverage.invalid.update(str(i.path) for i in session.items if isinstance(i, InvalidSuiteItem))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):  # an xdist worker: hand results to the controller
            self.config.workeroutput.update(self.session.worker_output())  # type: ignore[attr-defined]
        elif not self.session.finish():
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.session.results:
            return
        terminalreporter.section("evalkit results")
        for line, colour in self.session.summary_lines(verbose=self.config.getoption("verbose") > 0):
            terminalreporter.write_line(line, **({colour: True} if colour else {}))


class _XdistMerge:
    """Collects the results that xdist workers publish, so the controller writes one run record."""

    def __init__(self, session: EvalSession) -> None:
        self.session = session

    def pytest_testnodedown(self, node, error) -> None:
        self.session.merge_worker(getattr(node, "workeroutput", {}))

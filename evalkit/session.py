"""One evaluation session: models loaded once, datasets read once, results kept for the report."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.backends.base import Backend
from evalkit.errors import EvalkitError
from evalkit.results import CandidateResult, run_header, write_run
from evalkit.suite import ModelConfig, SuiteSpec, load_suite


@dataclass
class LoadedModel:
    name: str
    fingerprint: str
    load_s: float


@dataclass
class EvalSession:
    root: Path
    reports_dir: Path
    limit: int | None = None
    notify: Callable[[str], None] | None = None  # shows a message to the user right away
    started: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))
    results: dict[tuple[str, str], CandidateResult] = field(default_factory=dict)
    models: list[LoadedModel] = field(default_factory=list)
    _backends: dict[tuple, Backend] = field(default_factory=dict)
    _datasets: dict = field(default_factory=dict)
    _specs: dict[Path, SuiteSpec] = field(default_factory=dict)
    _limits: dict[tuple[str, str], int | None] = field(default_factory=dict)
    train_mode: str = "auto"  # auto: train missing or stale adapters; never: that is an error; always: retrain
    _adapters: dict[tuple[Path, str], Any] = field(default_factory=dict)

    def backend_for(self, model: ModelConfig, base_dir: Path) -> Backend:
        """The shared backend for ``model`` (loaded on first use, then reused by every suite)."""
        from evalkit.models import resolve_model

        resolved = resolve_model(model.name, base_dir=base_dir, notify=self.notify)
        key = (str(resolved.path), model.dtype, model.trust_remote_code, model.batch_size)
        if key not in self._backends:
            from evalkit.backends.hf import HFBackend

            started = time.perf_counter()
            self._backends[key] = HFBackend(
                resolved.path, fingerprint=resolved.fingerprint, dtype=model.dtype,
                trust_remote_code=model.trust_remote_code, batch_size=model.batch_size,
            )
            self.models.append(LoadedModel(model.name, self._backends[key].fingerprint, time.perf_counter() - started))
        return self._backends[key]

    def adapter(self, spec: SuiteSpec, name: str):
        """Adapter ``name`` of ``spec``, trained at most once per session (per ``train_mode``)."""
        key = (spec.path, name)
        if key not in self._adapters:
            from evalkit.train import ensure_adapter

            self._adapters[key] = ensure_adapter(spec, name, mode=self.train_mode, notify=self.notify)
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
            raise EvalkitError(f"adapter '{name}' is defined by {where}",
                               fix="name the suite: trained_adapter(name, suite='suites/<file>.eval.yaml')")
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
        from evalkit.runner import evaluate_candidate

        limits = [x for x in (self.limit, limit) if x is not None]
        row_limit = min(limits) if limits else None
        key = (spec.name, candidate)
        cached = self.results.get(key)
        if cached is None or self._limits.get(key) != row_limit:
            self.results[key] = evaluate_candidate(
                spec, candidate, self.backend_for, limit=row_limit, dataset_cache=self._datasets,
                adapter_provider=self.adapter,
            )
            self._limits[key] = row_limit
        return self.results[key]

    def write_reports(self) -> Path | None:
        if not self.results:
            return None
        finished = _dt.datetime.now(_dt.timezone.utc)
        header = run_header(self.root, self.started, finished)
        header["row_limit"] = self.limit
        ordered = sorted(self.results.values(), key=lambda r: (r.suite, r.candidate))
        try:
            return write_run(self.reports_dir / "latest", header, ordered)
        except OSError as exc:
            raise EvalkitError(f"cannot write the run record: {exc.strerror}", path=self.reports_dir,
                               fix="make the reports folder writable, or move it with --evalkit-reports") from None

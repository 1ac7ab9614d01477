"""Evaluate one (suite, candidate): render prompts, ask the backend (through the result cache), score,
compute metrics, and check the suite's thresholds.

The runner knows no task kind and no backend class: the suite's task kind builds and scores the requests,
and :class:`Resources` hands it the shared backends, adapters, datasets and result cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.backends import open_backend
from evalkit.backends.base import Backend
from evalkit.cache import CachedBackend, CacheStats, ResultCache
from evalkit.data import Dataset, load_dataset
from evalkit.errors import EvalkitError, TrainingError, did_you_mean, shown_path
from evalkit.failures import contamination_failure, missed_thresholds
from evalkit.fewshot import demo_contamination, prompt_identity
from evalkit.record import Latency, Robustness
from evalkit.results import CandidateResult
from evalkit.stats import wilson_interval
from evalkit.tasks import PreparedCandidate, Scored, ScoringServices, prepare, task_identity, task_kind

if TYPE_CHECKING:
    from evalkit.progress import Progress
    from evalkit.prompt_search import PromptSearchOutcome
    from evalkit.robustness.report import RobustnessReport
    from evalkit.spec import Candidate, ModelConfig, SuiteSpec
    from evalkit.train import TrainedAdapter


@dataclass
class Resources:
    """What evaluations share: a backend per model (built without loading weights), the adapters a
    suite trains, the datasets read so far and the result cache."""

    backend: Callable[[ModelConfig, Path], Backend] = lambda model, base_dir: open_backend(model, base_dir)
    adapter: Callable[[SuiteSpec, str], TrainedAdapter] | None = None
    cache: ResultCache | None = None
    datasets: dict[tuple[Path, int | None], Dataset] = field(default_factory=dict)
    # the committed baseline's outputs of (suite, candidate) by example id, for a pairwise judge
    baseline_outputs: Callable[[str, str], dict[str, str]] = lambda suite, candidate: {}
    # a live progress line for a candidate ("suite::candidate"), where the run shows one (a terminal)
    progress: Callable[[str], Progress] | None = None
    # a candidate's prompt search: auto searches a missing or stale one, never makes that an error, always
    # searches again (None: the train mode of the session the adapters come from)
    search_mode: str | None = None
    notify: Callable[[str], None] | None = None
    # each searched candidate's outcome, by (suite, candidate), as its evaluation found or made it
    prompt_searches: dict[tuple[str, str], PromptSearchOutcome] = field(default_factory=dict)

    def prompt_search_mode(self) -> str:
        if self.search_mode is not None:
            return self.search_mode
        owner = getattr(self.adapter, "__self__", None)  # a session's bound `adapter` knows its train mode
        return str(getattr(owner, "train_mode", "auto"))

    def prompt_search(self, spec: SuiteSpec, candidate: Candidate, backend: Backend) -> PromptSearchOutcome:
        """The candidate's prompt search, read from its artifact or run first (see evalkit.prompt_search)."""
        key = (spec.name, candidate.name)
        if key not in self.prompt_searches:
            from evalkit.prompt_search import ensure_prompt_search

            owner = getattr(self.adapter, "__self__", None)
            notify = self.notify or getattr(owner, "notify", None)
            self.prompt_searches[key] = ensure_prompt_search(
                spec, candidate, backend, mode=self.prompt_search_mode(), notify=notify
            )
        return self.prompt_searches[key]

    def dataset(self, spec: SuiteSpec, limit: int | None) -> Dataset:
        """The suite's golden rows (the first ``limit`` of them when limited), read once."""
        key = (spec.dataset_path, row_limit(spec, limit))
        if key not in self.datasets:
            self.datasets[key] = load_dataset(spec.dataset_path, limit=key[1], id_field=spec.id_field)
        return self.datasets[key]

    def trained_adapter(self, spec: SuiteSpec, name: str) -> TrainedAdapter:
        if self.adapter is None:
            raise TypeError("these resources provide no adapters")
        return self.adapter(spec, name)


def row_limit(spec: SuiteSpec, limit: int | None) -> int | None:
    """The rows a run evaluates: the first ``limit`` of the suite's own limit (None: all of them)."""
    limits = [x for x in (spec.dataset_limit, limit) if x is not None]
    return min(limits) if limits else None


def _candidate(spec: SuiteSpec, name: str) -> Candidate:
    if name not in spec.candidates:
        raise EvalkitError(
            f"suite '{spec.name}' has no candidate '{name}'{did_you_mean(name, spec.candidates)}",
            path=spec.path,
            fix=f"candidates are: {', '.join(spec.candidates)}",
        )
    return spec.candidates[name]


def answering_backend(
    spec: SuiteSpec,
    base: Backend,
    adapter: TrainedAdapter | None,
    cache: ResultCache | None,
    *,
    model: str | None = None,
    stats: CacheStats | None = None,
) -> CachedBackend:
    """``base`` (through ``adapter`` when there is one) behind the result cache, counting into ``stats`` (new
    ones by default); ``model`` names the model ``base`` is (an adapter for other weights is refused)."""
    stats = stats if stats is not None else CacheStats()
    if adapter is None:
        return CachedBackend(cache, base, stats=stats)
    if base.knows_weights:  # a served model's identity is the server's word; it checks its own adapters
        check_adapter_base(spec, adapter, base.identity.base_fingerprint, model)
    return CachedBackend(
        cache,
        base.with_adapter(adapter.key, adapter.path),
        stats=stats,
        adapter=adapter.record.get("adapter_sha256", adapter.key),
    )


class RunServices(ScoringServices):
    """What a model-graded scorer of one candidate's run may ask for: judge models behind the run's result
    cache (their answers, time and cache use counted apart from the candidate's), and other candidates'
    outputs on the same rows."""

    def __init__(self, spec: SuiteSpec, candidate: str, resources: Resources, limit: int | None) -> None:
        self.spec, self.candidate, self.resources, self.limit = spec, candidate, resources, limit
        self.stats = CacheStats()
        self._backends: dict[str, CachedBackend] = {}

    def backend(self, model: ModelConfig) -> Backend:
        key = model.model_dump_json()
        if key not in self._backends:
            inner = self.resources.backend(model, self.spec.path.parent)
            self._backends[key] = CachedBackend(self.resources.cache, inner, stats=self.stats)
        return self._backends[key]

    def adapted(self, model: ModelConfig, adapter: str) -> Backend:
        key = f"{model.model_dump_json()}+{adapter}"
        if key not in self._backends:
            inner = self.resources.backend(model, self.spec.path.parent)
            trained = self.resources.trained_adapter(self.spec, adapter)
            self._backends[key] = answering_backend(
                self.spec, inner, trained, self.resources.cache, model=model.name, stats=self.stats
            )
        return self._backends[key]

    def judge_adapter(self, adapter: str) -> Any:
        return self.resources.trained_adapter(self.spec, adapter)

    @property
    def load_s(self) -> float:
        """Seconds the judge models spent loading during this run (not the candidate's time)."""
        return sum(b.inner_load_s for b in self._backends.values())

    def outputs_of(self, candidate: str) -> list[str]:
        other = _candidate(self.spec, candidate)
        adapter = self.resources.trained_adapter(self.spec, other.adapter) if other.adapter is not None else None
        base = self.resources.backend(self.spec.model_for(candidate), self.spec.path.parent)
        backend = answering_backend(
            self.spec, base, adapter, self.resources.cache, model=self.spec.model_for(candidate).name
        )
        dataset = self.resources.dataset(self.spec, self.limit)
        prepared = prepare(
            self.spec, other, dataset, backend.apply_chat_template, dataset_cache=self.resources.datasets
        )
        kind = task_kind(self.spec.task.kind)
        outputs = kind.outputs(prepared, backend)
        if outputs is None:
            raise EvalkitError(f"task kind '{kind.name}' has no free-text outputs to compare", path=self.spec.path)
        self.stats.compute_s += backend.stats.compute_s
        return outputs

    def baseline_outputs(self) -> dict[str, str]:
        return self.resources.baseline_outputs(self.spec.name, self.candidate)


def evaluate_candidate(
    spec: SuiteSpec, candidate_name: str, resources: Resources, *, limit: int | None = None
) -> CandidateResult:
    """Run one candidate of a suite end to end and gate it on the suite's thresholds.

    A candidate with an adapter gets it from ``resources`` (which trains it when needed) and runs on the
    shared base model with the adapter attached. Answers come from the result cache where stored; the
    model loads only for a miss. ``limit`` evaluates only the first rows."""
    candidate = _candidate(spec, candidate_name)
    adapter = resources.trained_adapter(spec, candidate.adapter) if candidate.adapter is not None else None
    model = spec.model_for(candidate_name)
    base = resources.backend(model, spec.path.parent)  # may convert the embedded default once: not our time
    if spec.lm_eval is not None:  # lm-eval builds the requests and scores them (evalkit.harness)
        return _lm_eval_candidate(spec, candidate_name, base, adapter, resources, limit)
    searched = None
    if candidate.search is not None:  # the artifact's settings, searched first on the pool when missing or stale
        searched = resources.prompt_search(
            spec, candidate, answering_backend(spec, base, adapter, resources.cache, model=model.name)
        )
        spec, candidate = searched.applied(spec, candidate)
    started = time.perf_counter()
    dataset = resources.dataset(spec, limit)
    backend = answering_backend(spec, base, adapter, resources.cache, model=model.name)
    if resources.progress is not None:
        backend.progress = resources.progress(f"{spec.name}::{candidate_name}")
    services = RunServices(spec, candidate_name, resources, limit)
    prepared = prepare(
        spec,
        candidate,
        dataset,
        backend.apply_chat_template,
        dataset_cache=resources.datasets,
        services=services,
        **_searched_demos(spec, candidate, searched, resources),
    )
    scored = task_kind(spec.task.kind).score(prepared, backend)
    contaminated = demo_contamination(prepared.demos, dataset, spec, candidate_name)
    if contaminated is not None:
        scored.failures.append(contaminated)
    compute_s = backend.stats.compute_s
    latency = _latency(backend, scored)
    robustness, robustness_s = _robustness(spec, candidate_name, prepared, backend, scored)
    if backend.progress is not None:
        backend.progress.close()
    wall_s = time.perf_counter() - started - backend.inner_load_s - services.load_s - robustness_s
    if scored.judge is not None:
        scored.judge.compute_s = round(services.stats.compute_s, 3)
        scored.judge.cache = services.stats.info()
    return _result(
        spec,
        candidate_name,
        prepared,
        scored,
        adapter,
        backend,
        wall_s=wall_s,
        compute_s=compute_s,
        robustness=robustness.record() if robustness is not None else None,
        latency=latency,
    )


def _lm_eval_candidate(
    spec: SuiteSpec,
    candidate_name: str,
    base: Backend,
    adapter: TrainedAdapter | None,
    resources: Resources,
    limit: int | None,
) -> CandidateResult:
    """A candidate of an `lm_eval:` suite: lm-eval's requests, answered by ``base`` (through ``adapter``)
    behind the result cache, on the task's first ``limit`` documents (the suite's `limit:` at most)."""
    from evalkit.harness.run import evaluate_lm_eval

    model = spec.model_for(candidate_name)
    backend = answering_backend(spec, base, adapter, resources.cache, model=model.name)
    if resources.progress is not None:
        backend.progress = resources.progress(f"{spec.name}::{candidate_name}")
    return evaluate_lm_eval(spec, candidate_name, backend, adapter, limit=row_limit(spec, limit))


def _latency(backend: CachedBackend, scored: Scored) -> Latency | None:
    """A served run's latency and throughput over the requests it sent (its metrics added to ``scored``)."""
    if not backend.inner.measures_latency:
        return None
    from evalkit.latency import measured

    record, metrics, ci = measured(backend.stats, backend.inner.concurrency)
    scored.metrics.update(metrics)
    scored.ci.update(ci)
    return record


def _robustness(
    spec: SuiteSpec, candidate_name: str, prepared: PreparedCandidate, backend: CachedBackend, scored: Scored
) -> tuple[RobustnessReport | None, float]:
    """The candidate's robustness search, when the suite asks for one (its invariance added to the
    metrics), and this run's seconds of it: reported on their own (robustness.wall_s), so the cost per
    example stays comparable; a search answered from the cache takes none."""
    if spec.robustness_for(candidate_name) is None:
        return None, 0.0
    from evalkit.robustness import check_robustness

    started = time.perf_counter()
    robustness = check_robustness(prepared, backend, scored.examples)
    scored.metrics["invariance"] = robustness.invariance
    scored.ci["invariance"] = wilson_interval(sum(r.held for r in robustness.rows), len(robustness.rows))
    return robustness, time.perf_counter() - started


def _searched_demos(
    spec: SuiteSpec, candidate: Candidate, searched: PromptSearchOutcome | None, resources: Resources
) -> dict[str, Any]:
    """A searched candidate's demos: the artifact's fixed set, or each row's own from the pool without the
    dev rows (the pool the search measured)."""
    if searched is None or candidate.fewshot_path is None:
        return {}
    key = (candidate.fewshot_path, None)
    if key not in resources.datasets:
        resources.datasets[key] = load_dataset(candidate.fewshot_path, id_field=spec.id_field)
    return {"pool": searched.demo_pool(resources.datasets[key]), "demo_ids": searched.demo_ids}


def _failures(spec: SuiteSpec, candidate: str, scored: Scored, adapter: TrainedAdapter | None) -> list[str]:
    """Each threshold the candidate misses, why its scorer refuses it, and training data that overlaps the
    golden rows."""
    return [
        *missed_thresholds(spec, candidate, scored.metrics, scored.ci),
        *scored.failures,
        *contamination_failure(adapter),
    ]


def _result(
    spec: SuiteSpec,
    candidate: str,
    prepared: PreparedCandidate,
    scored: Scored,
    adapter: TrainedAdapter | None,
    backend: CachedBackend,
    *,
    wall_s: float,
    compute_s: float,
    robustness: Robustness | None,
    latency: Latency | None = None,
) -> CandidateResult:
    return CandidateResult(
        suite=spec.name,
        candidate=candidate,
        suite_path=str(spec.path),
        task=spec.task.kind,
        n=len(scored.examples),
        metrics={k: float(v) for k, v in scored.metrics.items()},
        ci95={k: (float(lo), float(hi)) for k, (lo, hi) in scored.ci.items()},
        thresholds={m: t.text for m, t in spec.thresholds_for(candidate).items()},
        failures=_failures(spec, candidate, scored, adapter),
        wall_s=round(wall_s, 3),
        tokens=scored.tokens,
        model=spec.model_for(candidate).name,
        model_fingerprint=backend.fingerprint,
        dataset_hash=prepared.dataset.content_hash,
        template_sha256=prepared.template.sha256,
        examples=scored.examples,
        adapter=adapter.info() if adapter is not None else None,
        repeats=spec.task.repeats,
        prompts_sha256=prompt_identity(prepared),  # the prompts, and their calibration
        task_sha256=task_identity(spec),  # the decoding and scorer (a search's chosen ones included)
        robustness=robustness,
        compute_s=round(compute_s, 3),
        cache=backend.stats.info(),
        judge=scored.judge,
        errors=scored.errors,
        latency=latency,
    )


def check_adapter_base(spec: SuiteSpec, adapter: TrainedAdapter, actual: str | None, model: str | None = None) -> None:
    """Refuses an adapter trained for another base model than the one it is evaluated on (``model``: that
    model's name; the suite's by default)."""
    model = model or spec.model.name
    trained_for = adapter.record.get("base_model_fingerprint")
    if actual is not None and trained_for != actual:
        raise TrainingError(
            f"adapter '{adapter.name}' ({adapter.path}) was trained for base model {str(trained_for)[:12]}, "
            f"but suite '{spec.name}' evaluates it on {model} ({actual[:12]})",
            path=spec.path,
            fix=f"retrain it: evalkit train {shown_path(spec.path)} --adapter {adapter.name}",
        )

"""One candidate of an `lm_eval:` suite, evaluated by lm-eval's own ``simple_evaluate`` (its requests,
few-shot sampler and seed, filters, ``process_results`` and aggregation) with evalkit answering, and
turned into an evalkit result: one example per document, thresholds, the baseline gate, reports."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalkit.data import canonical_json
from evalkit.failures import contamination_failure, missed_thresholds
from evalkit.harness.loading import LoadedTask, load_task, missing_field, schema_error
from evalkit.record import LmEvalInfo
from evalkit.results import CandidateResult, ExampleResult
from evalkit.stats import mean_interval, wilson_interval

if TYPE_CHECKING:
    from evalkit.cache import CachedBackend
    from evalkit.spec import SuiteSpec
    from evalkit.train import TrainedAdapter


def metric_key(key: str) -> str | None:
    """lm-eval's ``metric,filter`` result key as evalkit names it (``,none`` dropped); None for stderr."""
    if "_stderr," in key or "," not in key:
        return None
    return key.removesuffix(",none")


@dataclass
class TaskOutcome:
    """What lm-eval returned for a suite's task: per-document samples and its aggregated results."""

    loaded: LoadedTask
    results: dict[str, Any]
    requests: list[Any]  # (request type, args) as evalkit was asked, in order
    tokens: dict[str, int]  # prompt and output tokens of the answers

    @property
    def tasks(self) -> list[str]:
        return list(self.loaded.loaded["tasks"])

    @property
    def groups(self) -> dict[str, list[str]]:
        return {name: list(members) for name, members in self.loaded.loaded.get("group_map", {}).items()}


def run_task(spec: SuiteSpec, backend: Any, limit: int | None, model: str = "evalkit") -> TaskOutcome:
    """lm-eval's ``simple_evaluate`` of the suite's task, answered by ``backend`` (an evalkit backend) for
    model ``model`` (its name keys lm-eval's chat-template requests)."""
    from lm_eval.evaluator import simple_evaluate

    from evalkit.harness.lm import EvalkitLM

    settings = spec.lm_eval
    assert settings is not None
    loaded = load_task(settings, spec.path, spec.lm_eval_line)
    lm = EvalkitLM(backend, model_name=model)
    top = loaded.loaded["groups"].get(loaded.name) or loaded.loaded["tasks"][loaded.name]
    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        results = simple_evaluate(
            model=lm,
            tasks=[top],
            num_fewshot=settings.num_fewshot,
            limit=limit,
            bootstrap_iters=0,
            log_samples=True,
            apply_chat_template=settings.apply_chat_template,
            system_instruction=settings.system_instruction,
            fewshot_random_seed=settings.fewshot_seed,
            task_manager=loaded.manager,
        )
    except Exception as exc:
        missing = missing_field(exc)
        if missing is None:
            raise
        raise schema_error(loaded.name, missing, loaded.sources, spec.path, spec.lm_eval_line("data_files")) from None
    finally:
        quiet.setLevel(level)
    assert results is not None
    return TaskOutcome(loaded=loaded, results=results, requests=lm.requests_seen, tokens=dict(lm.tokens))


def examples_of(outcome: TaskOutcome, metric: str) -> list[ExampleResult]:
    """One example per document (of each task, for a group), passing by ``metric``; every metric lm-eval
    computed for it, under each filter, in its details. A multiple-choice example's output and target are
    choice indices, as lm-eval logs them (the choice texts are in its details): a committed baseline keeps
    no text of the data set."""
    examples: list[ExampleResult] = []
    several = len(outcome.tasks) > 1
    for task_name in outcome.tasks:
        by_doc: dict[int, list[dict[str, Any]]] = {}
        for sample in outcome.results["samples"].get(task_name, []):
            by_doc.setdefault(int(sample["doc_id"]), []).append(sample)
        task = outcome.loaded.loaded["tasks"][task_name]
        for doc_id in sorted(by_doc):
            examples.append(_example(task, task_name, doc_id, by_doc[doc_id], metric, several, len(examples)))
    return examples


def _example(
    task: Any, task_name: str, doc_id: int, samples: list[dict[str, Any]], metric: str, several: bool, row: int
) -> ExampleResult:
    first = samples[0]
    values: dict[str, float] = {}
    for sample in samples:
        suffix = "" if sample["filter"] == "none" else f",{sample['filter']}"
        for name in sample["metrics"]:
            value = sample[name]
            if isinstance(value, (int, float)):
                values[f"{name}{suffix}"] = float(value)
    target = first["target"]
    output: Any = first["filtered_resps"][0] if first["filtered_resps"] else ""
    details: dict[str, Any] = {"task": task_name, "doc_id": doc_id, "metrics": values}
    if task.OUTPUT_TYPE == "multiple_choice":  # a choice is named by its index, as lm-eval names it
        choices = task.doc_to_choice(first["doc"])
        scores = [resp[0] for resp in first["filtered_resps"]]
        output = max(range(len(scores)), key=scores.__getitem__)
        details["choice"] = choices[output]
        details["logprobs"] = [float(score) for score in scores]
        if isinstance(target, int) and 0 <= target < len(choices):
            details["gold_choice"] = choices[target]
    value = values.get(metric, 0.0)
    return ExampleResult(
        id=f"{task_name}/{doc_id}" if several else str(doc_id),
        row=row,
        prompt=str(first["arguments"][0][0]),
        output=str(output),
        target=target if isinstance(target, (str, int, float, list)) else str(target),
        correct=value >= 1.0,
        score=value,
        details=details,
    )


def metrics_of(examples: Sequence[ExampleResult], outcome: TaskOutcome) -> tuple[dict[str, float], dict]:
    """The suite's metrics with 95% intervals over the documents: ``accuracy`` (the share of documents that
    pass by the suite's `metric:`, as every suite reports it), lm-eval's aggregate of each metric for the
    task (or the group), and each member task's metrics as ``task/metric`` for a group."""
    results = outcome.results["results"]
    top = outcome.loaded.name
    passed = [float(e.correct) for e in examples]
    metrics: dict[str, float] = {"accuracy": sum(passed) / len(passed) if passed else 0.0}
    for key, value in results.get(top, {}).items():
        name = metric_key(key)
        if name is not None and isinstance(value, (int, float)):
            metrics[name] = float(value)
    if len(outcome.tasks) > 1:
        for task_name in outcome.tasks:
            for key, value in results.get(task_name, {}).items():
                name = metric_key(key)
                if name is not None and isinstance(value, (int, float)):
                    metrics[f"{task_name}/{name}"] = float(value)
    ci: dict[str, tuple[float, float]] = {}
    for name in metrics:
        task_name, _, metric = name.rpartition("/")
        values = [
            e.details["metrics"][metric]
            for e in examples
            if metric in e.details["metrics"] and (not task_name or e.details["task"] == task_name)
        ]
        if name == "accuracy":
            ci[name] = wilson_interval(sum(passed), len(passed))
        elif not values:
            ci[name] = (metrics[name], metrics[name])
        elif all(v in (0.0, 1.0) for v in values):
            ci[name] = wilson_interval(sum(values), len(values))
        else:
            ci[name] = mean_interval(values)
    return metrics, ci


def info_of(outcome: TaskOutcome, spec: SuiteSpec) -> LmEvalInfo:
    import lm_eval

    settings = spec.lm_eval
    assert settings is not None
    results = outcome.results["results"]
    return LmEvalInfo(
        task=settings.task,
        version=lm_eval.__version__,
        num_fewshot={k: int(v) for k, v in outcome.results.get("n-shot", {}).items() if k in outcome.tasks},
        fewshot_seed=settings.fewshot_seed,
        sources=dict(outcome.loaded.sources),
        results={
            name: {k.removesuffix(",none"): float(v) for k, v in values.items() if metric_key(k) is not None}
            for name, values in results.items()
        },
        group_subtasks=outcome.groups,
    )


def evaluate_lm_eval(
    spec: SuiteSpec, candidate: str, backend: CachedBackend, adapter: TrainedAdapter | None, *, limit: int | None
) -> CandidateResult:
    """Candidate ``candidate`` of an `lm_eval:` suite: lm-eval's requests answered by ``backend``."""
    settings = spec.lm_eval
    assert settings is not None
    started = time.perf_counter()
    outcome = run_task(spec, backend, limit, spec.model_for(candidate).name)
    examples = examples_of(outcome, settings.metric)
    metrics, ci = metrics_of(examples, outcome)
    failures: list[str] = []
    if settings.metric not in metrics:
        failures.append(
            f"task '{settings.task}' does not report metric '{settings.metric}' (it reports {', '.join(metrics)}): "
            "set `lm_eval: {metric: ...}` to one of them"
        )
    thresholds = spec.thresholds_for(candidate)
    for name in thresholds:
        if name not in metrics:
            failures.append(
                f"threshold on '{name}', which task '{settings.task}' does not report (it reports "
                f"{', '.join(m for m in metrics if '/' not in m)})"
            )
    failures += missed_thresholds(spec, candidate, metrics, ci) + contamination_failure(adapter)
    stats = backend.stats
    prompts = [canonical_json(list(args)) for _, args in outcome.requests]
    return CandidateResult(
        suite=spec.name,
        candidate=candidate,
        suite_path=str(spec.path),
        task="lm_eval",
        n=len(examples),
        metrics=metrics,
        ci95=ci,
        thresholds={m: t.text for m, t in thresholds.items()},
        failures=failures,
        wall_s=round(time.perf_counter() - started - backend.inner_load_s, 3),
        tokens=outcome.tokens,
        model=spec.model_for(candidate).name,
        model_fingerprint=backend.fingerprint,
        dataset_hash=_digest(
            sorted(
                {(task, s["doc_id"], s["doc_hash"]) for task, done in outcome.results["samples"].items() for s in done}
            )
        ),
        template_sha256=_digest(canonical_json(prompt_configs(outcome.results.get("configs", {})))),
        examples=examples,
        adapter=adapter.info() if adapter is not None else None,
        prompts_sha256=hashlib.sha256("\x00".join(prompts).encode()).hexdigest(),
        task_sha256=_digest(settings.model_dump_json(), info_version()),
        compute_s=round(stats.compute_s, 3),
        cache=stats.info(),
        lm_eval=info_of(outcome, spec),
    )


WHERE_READ = ("dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split", "test_split")


def prompt_configs(configs: dict[str, Any]) -> dict[str, Any]:
    """Each task's config as it decides the prompts and scoring: without where its documents were read from
    (the dataset's hash says which documents) or where its YAML was installed; with the task's version."""
    kept = {}
    for task, config in configs.items():
        version = (config.get("metadata") or {}).get("version")
        kept[task] = {k: v for k, v in config.items() if k not in WHERE_READ and k != "metadata"} | {"version": version}
    return kept


def info_version() -> str:
    import lm_eval

    return str(lm_eval.__version__)


def _digest(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        text = part if isinstance(part, str) else json.dumps(part, sort_keys=True, default=str)
        digest.update(text.encode() + b"\x00")
    return digest.hexdigest()

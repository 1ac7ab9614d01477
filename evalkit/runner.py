"""Evaluate one (suite, candidate): render prompts, query the backend, score, compute metrics, gate."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit.backends.base import Backend, ChoiceRequest, GenerateRequest
from evalkit.cache import CachedBackend, CacheStats, KeyParts, ResultCache
from evalkit.data import Dataset, Row, canonical_json, load_dataset
from evalkit.errors import DatasetError, EvalkitError, TrainingError, did_you_mean, shown_path
from evalkit.models import ModelIdentity
from evalkit.prompts import PromptTemplate, select_fewshot
from evalkit.results import CandidateResult, ExampleResult
from evalkit.scoring import build_scorer
from evalkit.stats import macro_f1, macro_f1_interval, mean_interval, wilson_interval
from evalkit.suite import Candidate, ModelConfig, SuiteSpec

BackendFactory = Callable[[ModelConfig, Path], Backend]
AdapterProvider = Callable[[SuiteSpec, str], Any]  # (suite, adapter name) -> evalkit.train.TrainedAdapter


def _row_label(dataset: Dataset, row: Row) -> str:
    return f"{dataset.path.name}:{row.line}" if row.line is not None else f"row {row.number} of {dataset.path.name}"


def _field(dataset: Dataset, row: Row, name: str, purpose: str) -> Any:
    if name not in row.fields:
        raise DatasetError(
            f"row has no field '{name}' ({purpose}){did_you_mean(name, row.fields)}; its fields are: "
            f"{', '.join(row.fields)}",
            **dataset.where(row), fix=f"add '{name}' to every row, or change the suite's `{purpose}`",
        )
    return row.fields[name]


def row_choices(spec: SuiteSpec, dataset: Dataset, row: Row) -> list[str]:
    if spec.task.choices is not None:
        return list(spec.task.choices)
    value = _field(dataset, row, spec.task.choices_field, "choices_field")
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, (str, int, float)) for c in value):
        raise DatasetError(f"field '{spec.task.choices_field}' must be a list of at least two choices, got {value!r}",
                           **dataset.where(row), fix="write the choices as a JSON list of strings")
    return [str(c) for c in value]


def gold_index(spec: SuiteSpec, dataset: Dataset, row: Row, choices: list[str]) -> int:
    """The gold choice of ``row``: its text, or a 0-based index into the choices."""
    value = _field(dataset, row, spec.task.target, "target")
    if isinstance(value, str) and value in choices:
        return choices.index(value)
    if isinstance(value, bool):
        pass
    elif isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if 0 <= index < len(choices):
            return index
    raise DatasetError(
        f"gold {spec.task.target} {value!r} is not one of the choices {choices}",
        **dataset.where(row), fix="use the choice's exact text or its 0-based index",
    )


@dataclass
class PreparedCandidate:
    """Rendered prompts and targets for every row: everything a backend call needs."""

    spec: SuiteSpec
    candidate: Candidate
    dataset: Dataset
    template: PromptTemplate
    prompts: list[str]
    choices: list[list[str]] = field(default_factory=list)
    gold: list[Any] = field(default_factory=list)
    fewshot: list[dict[str, Any]] = field(default_factory=list)  # the examples the template shows
    backend_for_chat: Callable[[], Backend] | None = None

    def render(self, fields: dict[str, Any], choices: list[str] | None, row_label: str) -> str:
        """The prompt for one row's ``fields`` (and its ``choices``, for classify): what the model sees."""
        context: dict[str, Any] = {**fields, "examples": self.fewshot}
        if choices is not None:
            context["choices"] = choices
        text = self.template.render(context, row_label=row_label)
        if self.candidate.chat:
            system = self.candidate.system
            messages = [{"role": "system", "content": system}] if system else []
            text = self.backend_for_chat().apply_chat_template([*messages, {"role": "user", "content": text}])
        return text


def prepare(spec: SuiteSpec, candidate: Candidate, dataset: Dataset, backend_for_chat: Callable[[], Backend],
            dataset_cache: dict[tuple[Path, int | None], Dataset] | None = None) -> PreparedCandidate:
    """Render every row's prompt; errors name the template, the row, and the fix."""
    if candidate.prompt_path is not None:
        template = PromptTemplate.from_file(candidate.prompt_path)
    else:
        template = PromptTemplate(candidate.template or "", inline_at=(spec.path, candidate.line),
                                  label=f"template of candidate '{candidate.name}'")
    examples: list[dict[str, Any]] = []
    if candidate.fewshot_path is not None:
        cache = dataset_cache if dataset_cache is not None else {}
        key = (candidate.fewshot_path, None)
        if key not in cache:
            cache[key] = load_dataset(candidate.fewshot_path, id_field=spec.id_field)
        pool = cache[key]
        for row in select_fewshot(pool.rows, candidate.fewshot_k, candidate.fewshot_seed):
            examples.append({**row.fields, "gold": _gold_text(spec, pool, row)})

    prepared = PreparedCandidate(spec=spec, candidate=candidate, dataset=dataset, template=template, prompts=[],
                                 fewshot=examples, backend_for_chat=backend_for_chat)
    for row in dataset.rows:
        choices = None
        if spec.task.kind == "classify":
            choices = row_choices(spec, dataset, row)
            prepared.choices.append(choices)
            prepared.gold.append(gold_index(spec, dataset, row, choices))
        else:
            target = _field(dataset, row, spec.task.target, "target") if spec.task.target else None
            prepared.gold.append(target)
        prepared.prompts.append(prepared.render(row.fields, choices, _row_label(dataset, row)))
    return prepared


def _gold_text(spec: SuiteSpec, dataset: Dataset, row: Row) -> Any:
    if spec.task.kind == "classify":
        choices = row_choices(spec, dataset, row)
        return choices[gold_index(spec, dataset, row, choices)]
    return row.fields.get(spec.task.target) if spec.task.target else None


def origin(spec: SuiteSpec, candidate: Candidate, row_id: str, repeat: int | str = 0) -> str:
    """Which example (and repeat, or "perturbed" for robustness) a request belongs to: the cache explains
    a miss against the example's last request."""
    return f"{spec.name}::{candidate.name}::{row_id}::{repeat}"


def _cached(backend: Backend) -> CachedBackend:
    """``backend`` as a CachedBackend (a plain one, as the trainer's validation passes, computes every answer)."""
    return backend if isinstance(backend, CachedBackend) else CachedBackend(None, lambda: backend)


def _rounded(value: float) -> float:
    return round(float(value), 6)


def score_classify(prepared: PreparedCandidate, backend: Backend) -> tuple[list[ExampleResult], dict, dict, dict]:
    spec = prepared.spec
    prefix = spec.task.choice_prefix
    requests = [ChoiceRequest(p, tuple(prefix + c for c in choices)) for p, choices in zip(prepared.prompts, prepared.choices)]
    responses = _cached(backend).score_choices(
        requests, origins=[origin(spec, prepared.candidate, row.id) for row in prepared.dataset.rows])
    examples, predicted, predicted_norm, gold = [], [], [], []
    tokens = {"prompt": 0, "output": 0}
    for row, prompt, choices, g, res in zip(prepared.dataset.rows, prepared.prompts, prepared.choices, prepared.gold, responses):
        best = max(range(len(choices)), key=lambda i: res.logprobs[i])
        best_norm = max(range(len(choices)), key=lambda i: res.logprobs[i] / max(1, len(choices[i])))
        predicted.append(choices[best])
        predicted_norm.append(choices[best_norm])
        gold.append(choices[g])
        tokens["prompt"] += res.context_tokens + sum(max(0, t - 1) for t in res.continuation_tokens)
        examples.append(ExampleResult(
            id=row.id, row=row.number, prompt=prompt, output=choices[best], target=choices[g],
            correct=best == g, score=float(best == g),
            details={"logprobs": {c: _rounded(lp) for c, lp in zip(choices, res.logprobs)},
                     "prediction_norm": choices[best_norm], "correct_norm": best_norm == g},
        ))
    n = len(examples)
    correct = sum(e.correct for e in examples)
    correct_norm = sum(e.details["correct_norm"] for e in examples)
    metrics = {
        "accuracy": correct / n,
        "acc_norm": correct_norm / n,
        "macro_f1": macro_f1(gold, predicted),
    }
    ci = {
        "accuracy": wilson_interval(correct, n),
        "acc_norm": wilson_interval(correct_norm, n),
        "macro_f1": macro_f1_interval(gold, predicted),
    }
    return examples, metrics, ci, tokens


def sample_seed(seed: int, example_id: str, repeat: int) -> int:
    """The random stream of one example's repeat: stable across runs, batches and row order."""
    digest = hashlib.sha256(f"{seed}:{example_id}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def score_generate(prepared: PreparedCandidate, backend: Backend) -> tuple[list[ExampleResult], dict, dict, dict]:
    """Generate and score every row; with ``repeats`` > 1, each row is sampled that many times and its
    accuracy is its pass rate (the share of repeats that were correct)."""
    spec = prepared.spec
    task = spec.task
    scorer = build_scorer(task.scorer_name, task.scorer_options, base_dir=spec.path.parent)
    rows = prepared.dataset.rows
    requests = [
        GenerateRequest(prompt, task.max_new_tokens, tuple(task.stop), temperature=task.temperature,
                        top_p=task.top_p, seed=sample_seed(task.seed, row.id, r))
        for r in range(task.repeats) for row, prompt in zip(rows, prepared.prompts)
    ]
    responses = _cached(backend).generate(requests, origins=[origin(spec, prepared.candidate, row.id, r)
                                                    for r in range(task.repeats) for row in rows])
    examples = []
    tokens = {"prompt": 0, "output": 0}
    n_rows = len(rows)
    for i, (row, prompt, target) in enumerate(zip(rows, prepared.prompts, prepared.gold)):
        runs = [responses[r * n_rows + i] for r in range(task.repeats)]
        scored = [scorer(res.text, target) for res in runs]
        for res in runs:
            tokens["prompt"] += res.prompt_tokens
            tokens["output"] += res.output_tokens
        first, first_score = runs[0], scored[0]
        details: dict[str, Any] = {"output_tokens": first.output_tokens}
        if first_score.extracted is not None:
            details["extracted"] = first_score.extracted
        pass_rate = None
        if task.repeats > 1:
            pass_rate = sum(bool(s.correct) for s in scored) / task.repeats
            details.update(outputs=[res.text for res in runs], flaky=0 < pass_rate < 1)
        examples.append(ExampleResult(
            id=row.id, row=row.number, prompt=prompt, output=first.text, target=target,
            correct=bool(first_score.correct) if pass_rate is None else pass_rate >= 0.5,
            score=sum(float(s.value) for s in scored) / task.repeats, details=details, pass_rate=pass_rate,
        ))
    n = len(examples)
    accuracy_values = [e.pass_rate if e.pass_rate is not None else float(e.correct) for e in examples]
    values = [e.score for e in examples]
    metrics = {"accuracy": sum(accuracy_values) / n, "score": sum(values) / n}
    ci = {"accuracy": mean_interval(accuracy_values), "score": mean_interval(values)}
    return examples, metrics, ci, tokens


def evaluate_candidate(
    spec: SuiteSpec,
    candidate_name: str,
    backend_factory: BackendFactory,
    *,
    limit: int | None = None,
    dataset_cache: dict[tuple[Path, int | None], Dataset] | None = None,
    adapter_provider: AdapterProvider | None = None,
    result_cache: ResultCache | None = None,
    identify: Callable[[ModelConfig, Path], ModelIdentity] | None = None,
    chat_renderer: Callable[[ModelConfig, Path], Any] | None = None,
) -> CandidateResult:
    """Run one candidate of a suite end to end and gate it on the suite's thresholds.

    A candidate with an adapter gets it from ``adapter_provider`` (which trains it when needed) and
    runs on the shared base model with the adapter attached. Answers come from ``result_cache`` where
    stored; the model is loaded only for a miss when ``identify`` names the model without loading it
    (and ``chat_renderer`` renders chat prompts from its tokenizer alone)."""
    if candidate_name not in spec.candidates:
        raise EvalkitError(f"suite '{spec.name}' has no candidate '{candidate_name}'{did_you_mean(candidate_name, spec.candidates)}",
                           path=spec.path, fix=f"candidates are: {', '.join(spec.candidates)}")
    candidate = spec.candidates[candidate_name]
    adapter = None
    if candidate.adapter is not None:
        if adapter_provider is None:
            from evalkit.train import ensure_adapter

            adapter_provider = lambda s, name: ensure_adapter(s, name)  # noqa: E731
        adapter = adapter_provider(spec, candidate.adapter)  # training time is reported as its own cost
    # Naming the model may convert the embedded default once: like loading, not this candidate's time.
    identity = identify(spec.model, spec.path.parent) if identify is not None else None
    started = time.perf_counter()
    cache = dataset_cache if dataset_cache is not None else {}
    limits = [x for x in (spec.dataset_limit, limit) if x is not None]
    row_limit = min(limits) if limits else None
    key = (spec.dataset_path, row_limit)
    if key not in cache:
        cache[key] = load_dataset(spec.dataset_path, limit=row_limit, id_field=spec.id_field)
    dataset = cache[key]

    backend_holder: list[Backend] = []
    load_s = 0.0  # loading (or converting) the model is reported once per session, not per candidate
    if adapter is not None and identity is not None:
        _check_adapter_base(spec, adapter, identity.base_fingerprint)

    def load() -> Backend:
        nonlocal load_s
        if not backend_holder:
            load_started = time.perf_counter()
            base = backend_factory(spec.model, spec.path.parent)
            if adapter is not None:
                _check_adapter_base(spec, adapter, getattr(base, "base_fingerprint", None))
                base = base.with_adapter(adapter.key, adapter.path)
            backend_holder.append(base)
            load_s = time.perf_counter() - load_started
        return backend_holder[0]

    chat = chat_renderer(spec.model, spec.path.parent).apply_chat_template if chat_renderer is not None else None
    stats = CacheStats()
    backend = CachedBackend(result_cache, load, model=identity.fingerprint if identity is not None else None,
                            adapter=adapter.record.get("adapter_sha256", adapter.key) if adapter is not None else "",
                            stats=stats, chat=chat)
    prepared = prepare(spec, candidate, dataset, lambda: backend, dataset_cache=cache)
    scorer_fn = score_classify if spec.task.kind == "classify" else score_generate
    examples, metrics, ci, tokens = scorer_fn(prepared, backend)
    main_compute_s = stats.compute_s
    robustness = None
    robustness_s = 0.0  # reported on its own (robustness.wall_s), so the cost per example stays comparable
    if spec.robustness_for(candidate_name) is not None:
        robustness_started = time.perf_counter()
        robustness = check_robustness(prepared, backend, examples)
        robustness_s = time.perf_counter() - robustness_started  # this run's time (a cached search takes none)
        held = sum(r.held for r in robustness.rows)
        metrics["invariance"] = robustness.invariance
        ci["invariance"] = wilson_interval(held, len(robustness.rows))

    thresholds = spec.thresholds_for(candidate_name)
    failures = [
        f"{metric} {metrics[metric]:.3f} (95% CI {ci[metric][0]:.3f}-{ci[metric][1]:.3f}) does not meet {t.text!r}"
        for metric, t in thresholds.items()
        if not t.check(metrics[metric])
    ]
    if adapter is not None and adapter.contamination and not adapter.allow_contamination:
        shown = "; ".join(str(d) for d in adapter.contamination[:5])
        more = f" and {len(adapter.contamination) - 5} more" if len(adapter.contamination) > 5 else ""
        failures.append(
            f"adapter '{adapter.name}' was trained on {len(adapter.contamination)} row(s) that duplicate golden test rows "
            f"({shown}{more}): remove them from the training data, or set `allow_contamination: true` in its `train:` entry"
        )
    return CandidateResult(
        suite=spec.name,
        candidate=candidate_name,
        suite_path=str(spec.path),
        task=spec.task.kind,
        n=len(examples),
        metrics={k: float(v) for k, v in metrics.items()},
        ci95={k: (float(lo), float(hi)) for k, (lo, hi) in ci.items()},
        thresholds={m: t.text for m, t in thresholds.items()},
        failures=failures,
        wall_s=round(time.perf_counter() - started - load_s - robustness_s, 3),
        tokens=tokens,
        model=spec.model.name,
        model_fingerprint=backend.fingerprint,
        dataset_hash=dataset.content_hash,
        template_sha256=prepared.template.sha256,
        examples=examples,
        adapter=adapter.summary() if adapter is not None else None,
        repeats=spec.task.repeats,
        prompts_sha256=hashlib.sha256("\x00".join(prepared.prompts).encode()).hexdigest(),
        robustness=robustness.as_dict() if robustness is not None else None,
        compute_s=round(main_compute_s, 3),
        cache=stats.as_dict(),
    )


def answer_text(output: str) -> str:
    """A generated answer as robustness compares it: case and runs of whitespace do not count."""
    return " ".join(output.split()).casefold()


def check_robustness(prepared: PreparedCandidate, backend: CachedBackend, examples: list[ExampleResult]):
    """Search each selected row for a harmless-looking change that changes the candidate's answer."""
    from evalkit.robustness import RobustnessReport, search, search_fingerprint, select_rows, text_fields

    spec, config, task = prepared.spec, prepared.spec.robustness, prepared.spec.task
    dataset = prepared.dataset
    exclude = {spec.id_field, task.target, task.choices_field}
    picked = select_rows(list(range(len(dataset.rows))), config.examples, config.seed)
    rows, full, labels = [], {}, {}
    for i in picked:
        row, example = dataset.rows[i], examples[i]
        fields = text_fields(row.fields, exclude, config.fields)
        missing = [name for name in config.fields or [] if not isinstance(row.fields.get(name), str)]
        if missing:
            raise DatasetError(f"robustness field '{missing[0]}' is not a text field of this row",
                               **dataset.where(row), fix="name text fields in `robustness.fields`")
        choices = prepared.choices[i] if task.kind == "classify" else None
        original = example.output if task.kind == "classify" else answer_text(example.output)
        rows.append((row.id, fields, choices, original))
        full[row.id], labels[row.id] = row.fields, f"{_row_label(dataset, row)} (perturbed)"

    def predict(batch):
        prompts = [prepared.render({**full[row_id], **fields}, choices, labels[row_id])
                   for row_id, fields, choices in batch]
        if task.kind == "classify":
            prefix = task.choice_prefix
            requests = [ChoiceRequest(p, tuple(prefix + c for c in choices))
                        for p, (_, _, choices) in zip(prompts, batch)]
            results = backend.score_choices(requests, origins=[origin(spec, prepared.candidate, row_id, "perturbed")
                                                               for row_id, _, _ in batch])
            return [choices[max(range(len(choices)), key=lambda k: r.logprobs[k])]
                    for r, (_, _, choices) in zip(results, batch)]
        requests = [GenerateRequest(p, task.max_new_tokens, tuple(task.stop), temperature=task.temperature,
                                    top_p=task.top_p, seed=sample_seed(task.seed, row_id, 0))
                    for p, (row_id, _, _) in zip(prompts, batch)]
        perturbed = [origin(spec, prepared.candidate, row_id, "perturbed") for row_id, _, _ in batch]
        return [answer_text(r.text) for r in backend.generate(requests, origins=perturbed)]

    # The search is deterministic given its answers, so its outcome is cached under everything the answers
    # and the search depend on: model, adapter, how a row renders, the rows, the settings and the code.
    inputs = {"template": prepared.template.sha256, "fewshot": prepared.fewshot, "chat": prepared.candidate.chat,
              "system": prepared.candidate.system, "task": task.model_dump(mode="json"), "full": full, "rows": rows,
              "code": search_fingerprint(config.perturbations)}
    parts = KeyParts("robustness", backend.fingerprint, backend.adapter, hashlib.sha256(
        canonical_json(inputs).encode()).hexdigest(), canonical_json(config.model_dump(mode="json")))
    stored = backend.cache.lookup([parts.key]) if backend.cache is not None else {}
    if stored:
        report = RobustnessReport.from_stored(json.loads(stored[parts.key][0]))
    else:
        report = search(rows, config.perturbations, predict, tries=config.tries, seed=config.seed,
                        shrink_calls=config.shrink_calls)
        if backend.cache is not None:
            backend.cache.store([(parts, json.dumps(asdict(report)), report.wall_s)])
    held = {r.id: r.held for r in report.rows}
    for i in picked:
        examples[i].details["invariance"] = float(held[dataset.rows[i].id])
    return report


def _check_adapter_base(spec: SuiteSpec, adapter: Any, actual: str | None) -> None:
    """Refuses an adapter trained for another base model than the suite's."""
    trained_for = adapter.record.get("base_model_fingerprint")
    if actual is not None and trained_for != actual:
        raise TrainingError(
            f"adapter '{adapter.name}' ({adapter.path}) was trained for base model {str(trained_for)[:12]}, "
            f"but suite '{spec.name}' evaluates {spec.model.name} ({actual[:12]})",
            path=spec.path, fix=f"retrain it: evalkit train {shown_path(spec.path)} --adapter {adapter.name}",
        )

"""Task kinds: how a suite's rows become requests, how the answers are scored, which metrics they give.

A task kind is an object registered by name (``classify``, ``generate``, or a third-party one under the
``evalkit.task_kinds`` entry-point group). It checks its part of the suite, reads each row's gold answer,
builds its requests, scores the answers, and names its metrics; nothing else in evalkit branches on the
kind. Rendering prompts (:func:`prepare`) is shared by every kind, the trainer included.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from evalkit.backends.base import Backend, ChoiceRequest, ChoiceResult, GenerateRequest
from evalkit.data import Dataset, Row, canonical_json, load_dataset
from evalkit.errors import DatasetError, ScorerError, did_you_mean
from evalkit.fewshot import ContextualCalibration, Demos, build_demos
from evalkit.prompts import PromptTemplate
from evalkit.record import ByPosition, Confusion, ErrorAnalysis, JudgeInfo
from evalkit.registry import Registry
from evalkit.results import ExampleResult
from evalkit.stats import by_position, confusion, macro_f1, macro_f1_interval, mean_interval, wilson_interval

if TYPE_CHECKING:
    from evalkit.backends.base import ModelConfig
    from evalkit.robustness.perturb import PerturbedRow
    from evalkit.scoring import Score, ScoreFn
    from evalkit.spec import Candidate, SuiteSpec, TaskConfig

ENTRY_POINT_GROUP = "evalkit.task_kinds"
Turns = tuple[tuple[str, str], ...]  # a chat candidate's (role, content) turns; empty for a plain prompt


def row_label(dataset: Dataset, row: Row) -> str:
    return f"{dataset.path.name}:{row.line}" if row.line is not None else f"row {row.number} of {dataset.path.name}"


def row_field(dataset: Dataset, row: Row, name: str, purpose: str) -> Any:
    """``row``'s field ``name``; a DatasetError naming the row and the suite key (``purpose``) when missing."""
    if name not in row.fields:
        raise DatasetError(
            f"row has no field '{name}' ({purpose}){did_you_mean(name, row.fields)}; its fields are: "
            f"{', '.join(row.fields)}",
            **dataset.where(row),
            fix=f"add '{name}' to every row, or change the suite's `{purpose}`",
        )
    return row.fields[name]


def origin(spec: SuiteSpec, candidate: Candidate, row_id: str, repeat: int | str = 0) -> str:
    """Which example (and repeat, or "perturbed" for robustness) a request belongs to: the cache explains
    a miss against the example's last request."""
    return f"{spec.name}::{candidate.name}::{row_id}::{repeat}"


def sample_seed(seed: int, example_id: str, repeat: int) -> int:
    """The random stream of one example's repeat: stable across runs, batches and row order."""
    digest = hashlib.sha256(f"{seed}:{example_id}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def answer_text(output: str) -> str:
    """A generated answer as robustness compares it: case and runs of whitespace do not count."""
    return " ".join(output.split()).casefold()


def _rounded(value: float) -> float:
    return round(float(value), 6)


class ChoiceDetails(MutableMapping[str, Any]):
    """A classify example's details, ``{"logprobs": {choice: its log-likelihood, rounded to 6 places},
    "prediction_norm": the choice picked by length-normalised log-likelihood, "correct_norm": whether that
    is the gold one}``, kept as the row's choices, their rounded log-likelihoods and the normalised pick:
    the mapping (and its ``logprobs`` dict) is made when read, so 20,000 examples do not hold 40,000 dicts.
    Once changed (robustness adds ``invariance``), it is that dict and holds it."""

    __slots__ = ("_choices", "_correct_norm", "_dict", "_logprobs", "_norm")
    KEYS = ("logprobs", "prediction_norm", "correct_norm")

    def __init__(self, choices: Sequence[str], logprobs: Sequence[float], prediction_norm: str, correct_norm: bool):
        self._choices, self._logprobs = choices, tuple(_rounded(lp) for lp in logprobs)
        self._norm, self._correct_norm = prediction_norm, correct_norm
        self._dict: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The details as a plain dict (a new one each time, until they are changed)."""
        if self._dict is not None:
            return self._dict
        logprobs = dict(zip(self._choices, self._logprobs))
        return {"logprobs": logprobs, "prediction_norm": self._norm, "correct_norm": self._correct_norm}

    def __getitem__(self, key: str) -> Any:
        if self._dict is not None:
            return self._dict[key]
        if key == "logprobs":
            return dict(zip(self._choices, self._logprobs))
        if key == "prediction_norm":
            return self._norm
        if key == "correct_norm":
            return self._correct_norm
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict if self._dict is not None else self.KEYS)

    def __len__(self) -> int:
        return len(self._dict if self._dict is not None else self.KEYS)

    def __setitem__(self, key: str, value: Any) -> None:
        self._dict = self.as_dict()
        self._dict[key] = value

    def __delitem__(self, key: str) -> None:
        self._dict = self.as_dict()
        del self._dict[key]

    def __repr__(self) -> str:
        return repr(self.as_dict())


# --------------------------------------------------------------------------- model-graded scoring


@dataclass
class Graded:
    """A model-graded scorer's work on one candidate: a Score per output, what the run record keeps of the
    grading (its identity, the judge's measured agreement), and why the candidate may not pass."""

    scores: list[Score]
    record: JudgeInfo | None = None
    failures: list[str] = field(default_factory=list)


class ScoringServices(ABC):
    """What a model-graded scorer may ask of the run evaluating a candidate: a model, and another
    candidate's outputs on the same rows."""

    @abstractmethod
    def backend(self, model: ModelConfig) -> Backend:
        """The model a ``model:`` block names, behind the run's result cache."""

    @abstractmethod
    def outputs_of(self, candidate: str) -> list[str]:
        """Candidate ``candidate``'s output for each row (its first sample), in row order."""

    @abstractmethod
    def baseline_outputs(self) -> dict[str, str]:
        """The committed baseline's output for each example id of this candidate (empty when there is none)."""

    def adapted(self, model: ModelConfig, adapter: str) -> Backend:
        """The model a ``model:`` block names, through adapter ``adapter`` of the suite's `train:` section
        (a judge adapter), behind the run's result cache."""
        raise self._no_adapters(adapter)

    def judge_adapter(self, adapter: str) -> Any:
        """Judge adapter ``adapter`` of the suite's `train:` section, trained when missing or stale (a
        :class:`evalkit.train.adapters.TrainedAdapter`: its training record)."""
        raise self._no_adapters(adapter)

    @staticmethod
    def _no_adapters(adapter: str) -> ScorerError:
        return ScorerError(
            f"a judge adapter ('{adapter}') is evaluated in a suite's run, where its `train:` entry is at hand",
            fix="run the suite with pytest (or evalkit.testing.evaluate)",
        )


class StandaloneServices(ScoringServices):
    """Scoring services outside an evaluation run (the trainer's per-epoch validation): each model opened
    once, without the result cache; there are no other candidates and no baseline to compare with."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._backends: dict[str, Backend] = {}

    def backend(self, model: ModelConfig) -> Backend:
        from evalkit.backends import open_backend

        key = model.model_dump_json()
        if key not in self._backends:
            self._backends[key] = open_backend(model, self.base_dir)
        return self._backends[key]

    def outputs_of(self, candidate: str) -> list[str]:
        raise ScorerError(
            f"pairwise judging against '{candidate}' runs in an evaluation, not in training",
            fix="validate adapters with likelihood or generate judging",
        )

    def baseline_outputs(self) -> dict[str, str]:
        return {}


class ModelGradedScorer(ABC):
    """A scorer that asks a model: it grades every output of a candidate at once, through the backends of
    ``prepared.services``, so its requests are batched and cached like the candidate's own."""

    @abstractmethod
    def grade(self, prepared: PreparedCandidate, rows: Sequence[int], outputs: Sequence[str]) -> Graded:
        """Score ``outputs[i]``, the answer to row ``rows[i]`` of ``prepared``."""

    def model_blocks(self) -> list[tuple[tuple[str | int, ...], ModelConfig]]:
        """Each model block it asks for, with its key path under ``task.scorer`` (checked like `model:`)."""
        return []

    def check_candidates(self, names: Sequence[str]) -> None:
        """Refuse (ValueError) a reference to a candidate the suite does not have."""

    def place(self, suite_path: Path, line: Callable[..., int | None]) -> None:
        """Where the suite writes the scorer, for errors found while grading."""


def task_identity(spec: SuiteSpec) -> str:
    """The task's settings by content hash (kind, choices, target, scorer, decoding: ``max_new_tokens``,
    ``temperature``, ``stop``, repeats): what decides a candidate's answers and their grades beside its
    prompts, so a changed decoding is a configuration of its own."""
    return hashlib.sha256(canonical_json(spec.task.model_dump(mode="json")).encode()).hexdigest()[:16]


@dataclass
class PreparedCandidate:
    """Rendered prompts and gold answers for every row: everything a backend call needs."""

    spec: SuiteSpec
    candidate: Candidate
    dataset: Dataset
    template: PromptTemplate
    prompts: list[str]
    choices: list[list[str]] = field(default_factory=list)  # per row, for kinds that offer choices
    gold: list[Any] = field(default_factory=list)
    fewshot: list[dict[str, Any]] = field(default_factory=list)  # the examples the template shows
    chat: Callable[[Sequence[dict[str, str]]], str] | None = None  # renders a chat prompt (chat candidates)
    turns: list[Turns] = field(default_factory=list)  # per row, the chat turns its prompt was rendered from
    services: ScoringServices | None = None  # what a model-graded scorer asks of the run (a judge's model)
    demos: Demos | None = None  # where the demos come from (per row for `select: nearest`)
    calibration: ContextualCalibration | None = None  # classify `calibration: contextual`

    def choice_answers(
        self, backend: Backend, requests: Sequence[ChoiceRequest], items: Sequence[tuple[dict[str, Any], list[str]]]
    ) -> tuple[list[ChoiceResult], list[Sequence[float]]]:
        """The backend's answers to ``requests`` (one per item: a row's fields and choices) and what each
        row's choice is decided by: its log-likelihoods, or calibrated scores. A calibrated candidate's
        content-free requests for demo sets not measured yet go in the same call as the rows, so a row
        and its demo set's content-free inputs share one computed prefix (the demos)."""
        if self.calibration is None:
            responses = backend.score_choices(requests)
            return responses, [r.logprobs for r in responses]
        plan = self.calibration.plan(self, items)
        answers = backend.score_choices([*requests, *plan.requests])
        responses = answers[: len(requests)]
        self.calibration.absorb(plan, answers[len(requests) :])
        return responses, list(self.calibration.calibrated(plan.keys, responses))

    @property
    def kind(self) -> TaskKind:
        return task_kind(self.spec.task.kind)

    def row_choices(self, index: int) -> list[str] | None:
        return self.choices[index] if self.choices else None

    def render(self, fields: dict[str, Any], choices: list[str] | None, label: str) -> str:
        """The prompt for one row's ``fields`` (and its ``choices``, for classify): what the model sees."""
        return self.render_with_turns(fields, choices, label)[0]

    def render_with_turns(
        self, fields: dict[str, Any], choices: list[str] | None, label: str, examples: list[Any] | None = None
    ) -> tuple[str, Turns]:
        """:meth:`render`, and for a chat candidate the turns the prompt was rendered from (a served model
        gets those and applies its own chat template). ``examples``: other demos than the row's own."""
        if examples is None:
            examples = (
                self.demos.examples_for(fields) if self.demos is not None and self.demos.per_row else self.fewshot
            )
        context: dict[str, Any] = {**fields, "examples": examples}
        if choices is not None:
            context["choices"] = choices
        text = self.template.render(context, row_label=label)
        if not self.candidate.chat:
            return text, ()
        if self.chat is None:
            raise TypeError("a chat candidate needs a chat renderer")
        system = self.candidate.system
        turns: Turns = ((("system", system),) if system else ()) + (("user", text),)
        return self.chat([{"role": role, "content": content} for role, content in turns]), turns

    def subset(self, indices: list[int]) -> PreparedCandidate:
        """The same candidate on the rows at ``indices`` only."""
        rows = tuple(self.dataset.rows[i] for i in indices)
        return PreparedCandidate(
            spec=self.spec,
            candidate=self.candidate,
            dataset=Dataset(path=self.dataset.path, rows=rows, content_hash=self.dataset.content_hash),
            template=self.template,
            prompts=[self.prompts[i] for i in indices],
            choices=[self.choices[i] for i in indices] if self.choices else [],
            gold=[self.gold[i] for i in indices],
            fewshot=self.fewshot,
            chat=self.chat,
            turns=[self.turns[i] for i in indices],
            services=self.services,
            demos=self.demos,
            calibration=self.calibration,
        )


def candidate_template(spec: SuiteSpec, candidate: Candidate) -> PromptTemplate:
    """The candidate's template: its prompt file, or its inline template."""
    if candidate.prompt_path is not None:
        return PromptTemplate.from_file(candidate.prompt_path)
    return PromptTemplate(
        candidate.template or "",
        inline_at=(spec.path, candidate.line),
        label=f"template of candidate '{candidate.name}'",
    )


def _demos(
    spec: SuiteSpec,
    candidate: Candidate,
    dataset_cache: dict[tuple[Path, int | None], Dataset],
    pool: Dataset | None = None,
    demo_ids: Sequence[str] | None = None,
) -> Demos | None:
    """The candidate's demos (evalkit.fewshot), from ``pool`` or its `fewshot:` rows; ``demo_ids``: a set
    chosen before (a prompt search's)."""
    if candidate.fewshot_path is None:
        return None
    if pool is None:
        key = (candidate.fewshot_path, None)
        if key not in dataset_cache:
            dataset_cache[key] = load_dataset(candidate.fewshot_path, id_field=spec.id_field)
        pool = dataset_cache[key]
    kind = task_kind(spec.task.kind)
    chosen: Dataset = pool
    labelled = kind.offers_choices and spec.task.target is not None

    def example(row: Row) -> dict[str, Any]:
        return {**row.fields, "gold": kind.gold_text(spec, chosen, row)}

    def label(row: Row) -> str:
        return str(kind.gold_text(spec, chosen, row))

    return build_demos(spec, candidate, pool, example, label if labelled else None, demo_ids=demo_ids)


def prepare(
    spec: SuiteSpec,
    candidate: Candidate,
    dataset: Dataset,
    chat: Callable[[Sequence[dict[str, str]]], str] | None = None,
    dataset_cache: dict[tuple[Path, int | None], Dataset] | None = None,
    services: ScoringServices | None = None,
    *,
    pool: Dataset | None = None,
    demo_ids: Sequence[str] | None = None,
) -> PreparedCandidate:
    """Render every row's prompt; errors name the template, the row, and the fix. ``chat`` renders the
    prompts of a chat candidate (a backend's ``apply_chat_template``); ``services`` are what a
    model-graded scorer may ask of the run. ``pool``: the rows demos come from (default: the candidate's
    `fewshot:` rows); ``demo_ids``: a fixed demo set chosen before (a prompt search's artifact)."""
    kind = task_kind(spec.task.kind)
    demos = _demos(spec, candidate, dataset_cache if dataset_cache is not None else {}, pool, demo_ids)
    prepared = PreparedCandidate(
        spec=spec,
        candidate=candidate,
        dataset=dataset,
        template=candidate_template(spec, candidate),
        prompts=[],
        fewshot=[demos.example(r) for r in demos.fixed] if demos is not None and demos.fixed is not None else [],
        chat=chat,
        services=services,
        demos=demos,
        calibration=ContextualCalibration() if candidate.calibration == "contextual" else None,
    )
    if demos is not None:
        demos.prefetch([row.fields for row in dataset.rows])
    for row in dataset.rows:
        choices, gold = kind.row_answers(spec, dataset, row)
        if choices is not None:
            if prepared.choices and choices == prepared.choices[-1]:
                choices = prepared.choices[-1]  # a fixed label set: one list for every row (never changed)
            prepared.choices.append(choices)
        prepared.gold.append(gold)
        prompt, turns = prepared.render_with_turns(row.fields, choices, row_label(dataset, row))
        prepared.prompts.append(prompt)
        prepared.turns.append(turns)
    return prepared


@dataclass
class Scored:
    """A candidate's answers, scored: one ExampleResult per row, the metrics with 95% intervals, tokens;
    for a model-graded scorer, what it records of the grading and why the candidate may not pass."""

    examples: list[ExampleResult]
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    tokens: dict[str, int]
    judge: JudgeInfo | None = None
    failures: list[str] = field(default_factory=list)
    errors: ErrorAnalysis | None = None  # where the candidate errs: a confusion matrix, or failure shapes


class TaskProblem(Exception):
    """A mistake in a suite's task settings, found by its kind: ``where`` is the key path in the suite."""

    def __init__(self, message: str, *where: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message, self.where, self.fix = message, where, fix


class TaskKind(ABC):
    """One kind of task. Subclasses are registered with ``@register_task_kind(name)``."""

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()  # the metrics it reports, the default gated one first
    per_example: ClassVar[tuple[str, ...]] = ()  # those that are a mean of one value per example: gateable
    offers_choices: ClassVar[bool] = False  # whether each row shows choices (perturbations may reorder them)
    learns_to_stop: ClassVar[bool] = False  # whether an adapter learns to end its answer (EOS after the completion)
    decodes: ClassVar[bool] = False  # whether answers are decoded token by token (fewer, larger calls cost less)

    def check(self, task: TaskConfig) -> None:
        """Refuse settings that make no sense for this kind (ValueError with the reason)."""

    def check_suite(self, task: TaskConfig, base_dir: Path) -> ScoreFn | ModelGradedScorer | None:
        """Suite-level checks once paths are known (TaskProblem); the built scorer, for kinds that use one."""
        return None

    @abstractmethod
    def row_answers(self, spec: SuiteSpec, dataset: Dataset, row: Row) -> tuple[list[str] | None, Any]:
        """(the choices the row offers or None, its gold answer as the scorer sees it)."""

    @abstractmethod
    def gold_text(self, spec: SuiteSpec, dataset: Dataset, row: Row) -> Any:
        """The gold answer as a few-shot example shows it."""

    @abstractmethod
    def completion(self, spec: SuiteSpec, prepared: PreparedCandidate, index: int) -> str:
        """The text an adapter learns to write after row ``index``'s prompt."""

    @abstractmethod
    def score(self, prepared: PreparedCandidate, backend: Backend) -> Scored:
        """Ask ``backend`` for every row and score the answers."""

    @abstractmethod
    def predict(self, prepared: PreparedCandidate, backend: Backend, rows: Sequence[PerturbedRow]) -> list[str]:
        """The answers to perturbed rows, in the form :meth:`answer_of` gives (robustness)."""

    @abstractmethod
    def answer_of(self, example: ExampleResult) -> str:
        """An example's answer as robustness compares it."""

    def outputs(self, prepared: PreparedCandidate, backend: Backend) -> list[str] | None:
        """Each row's free-text output, unscored, for a pairwise judge to compare another candidate's with;
        None for a kind without free-text outputs."""
        return None

    def label_changes(self, ref: Sequence[Any], cur: Sequence[Any]) -> list[dict[str, Any]] | None:
        """What a comparison with the baseline adds for this kind about the shared examples, given as
        :class:`evalkit.compare.Outcome` (``ref[i]`` and ``cur[i]`` are one example): each gold label's
        changed recall, for a classifier; None otherwise."""
        return None


def _as_task_kind(name: str, loaded: object) -> Any:
    """What an entry point names: a TaskKind subclass (instantiated) or an instance; anything else as it
    is, for the registry to refuse by its type."""
    return loaded() if isinstance(loaded, type) and issubclass(loaded, TaskKind) else loaded


TASK_KINDS: Registry[TaskKind] = Registry("task kind", ENTRY_POINT_GROUP, adapt=_as_task_kind, instance_of=TaskKind)


def register_task_kind(name: str) -> Callable[[type[TaskKind]], type[TaskKind]]:
    """Class decorator registering (an instance of) a TaskKind subclass under ``name``."""

    def decorate(cls: type[TaskKind]) -> type[TaskKind]:
        cls.name = name
        TASK_KINDS.add(name, cls())
        return cls

    return decorate


def task_kind(name: str) -> TaskKind:
    """The task kind registered as ``name``; EvalkitError when there is none or it fails to import."""
    return TASK_KINDS.get(name)


# --------------------------------------------------------------------------- classify


@register_task_kind("classify")
class Classify(TaskKind):
    """Pick one of the row's choices by log-likelihood (no sampling)."""

    metrics = ("accuracy", "acc_norm", "macro_f1")
    per_example = ("accuracy", "acc_norm")
    offers_choices = True

    def check(self, task: TaskConfig) -> None:
        if task.target is None:
            raise ValueError("a classify task needs `target:` (the row field with the gold choice)")
        if (task.choices is None) == (task.choices_field is None):
            raise ValueError("a classify task needs exactly one of `choices:` or `choices_field:`")
        if task.choices is not None and len(set(task.choices)) != len(task.choices):
            raise ValueError("`choices` contains duplicates")
        if task.temperature > 0 or task.repeats > 1:
            raise ValueError(
                "a classify task scores every choice's log-likelihood; `temperature` and `repeats` "
                "apply to generate tasks only"
            )

    def choices(self, spec: SuiteSpec, dataset: Dataset, row: Row) -> list[str]:
        if spec.task.choices is not None:
            return list(spec.task.choices)
        name = spec.task.choices_field or ""
        value = row_field(dataset, row, name, "choices_field")
        if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, (str, int, float)) for c in value):
            raise DatasetError(
                f"field '{name}' must be a list of at least two choices, got {value!r}",
                **dataset.where(row),
                fix="write the choices as a JSON list of strings",
            )
        if all(type(c) is str for c in value):
            return value  # the row's own list (never changed): no copy of it per candidate
        return [str(c) for c in value]

    def gold_index(self, spec: SuiteSpec, dataset: Dataset, row: Row, choices: list[str]) -> int:
        """The gold choice of ``row``: its text, or a 0-based index into the choices."""
        value = row_field(dataset, row, spec.task.target or "", "target")
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
            **dataset.where(row),
            fix="use the choice's exact text or its 0-based index",
        )

    def row_answers(self, spec: SuiteSpec, dataset: Dataset, row: Row) -> tuple[list[str] | None, Any]:
        choices = self.choices(spec, dataset, row)
        return choices, self.gold_index(spec, dataset, row, choices)

    def gold_text(self, spec: SuiteSpec, dataset: Dataset, row: Row) -> Any:
        choices = self.choices(spec, dataset, row)
        return choices[self.gold_index(spec, dataset, row, choices)]

    def completion(self, spec: SuiteSpec, prepared: PreparedCandidate, index: int) -> str:
        return spec.task.choice_prefix + prepared.choices[index][prepared.gold[index]]

    def _requests(
        self, prepared: PreparedCandidate, rows: Sequence[tuple[str, str, list[str]]], repeat: int | str
    ) -> list[ChoiceRequest]:
        prefix = prepared.spec.task.choice_prefix
        requests = []
        last: tuple[list[str] | None, tuple[str, ...]] = (None, ())
        for row_id, prompt, choices in rows:
            if choices is not last[0]:  # rows that share their choices share the continuations too
                last = (choices, tuple(prefix + c for c in choices))
            requests.append(
                ChoiceRequest(prompt, last[1], origin=origin(prepared.spec, prepared.candidate, row_id, repeat))
            )
        return requests

    def score(self, prepared: PreparedCandidate, backend: Backend) -> Scored:
        rows = prepared.dataset.rows
        responses, decisions = prepared.choice_answers(
            backend,
            self._requests(
                prepared, [(row.id, p, c) for row, p, c in zip(rows, prepared.prompts, prepared.choices)], 0
            ),
            [(row.fields, c) for row, c in zip(rows, prepared.choices)],
        )
        decided = iter(decisions)  # log-likelihoods, or calibrated scores
        examples, predicted, gold, chosen = [], [], [], []
        tokens = {"prompt": 0, "output": 0}
        for row, prompt, choices, g, res in zip(rows, prepared.prompts, prepared.choices, prepared.gold, responses):
            scores = next(decided)  # this row's
            best = max(range(len(choices)), key=lambda i: scores[i])
            best_norm = max(range(len(choices)), key=lambda i: res.logprobs[i] / max(1, len(choices[i])))
            predicted.append(choices[best])
            gold.append(choices[g])
            chosen.append(best)
            tokens["prompt"] += res.context_tokens + sum(max(0, t - 1) for t in res.continuation_tokens)
            examples.append(
                ExampleResult(
                    id=row.id,
                    row=row.number,
                    prompt=prompt,
                    output=choices[best],
                    target=choices[g],
                    correct=best == g,
                    score=1.0 if best == g else 0.0,
                    details=ChoiceDetails(choices, res.logprobs, choices[best_norm], best_norm == g),
                )
            )
        n = len(examples)
        correct = sum(e.correct for e in examples)
        correct_norm = sum(e.details["correct_norm"] for e in examples)
        metrics = {"accuracy": correct / n, "acc_norm": correct_norm / n, "macro_f1": macro_f1(gold, predicted)}
        ci = {
            "accuracy": wilson_interval(correct, n),
            "acc_norm": wilson_interval(correct_norm, n),
            "macro_f1": macro_f1_interval(gold, predicted),
        }
        if prepared.spec.task.choices is not None:  # a fixed label set: who is mistaken for whom
            matrix = confusion(gold, predicted, list(prepared.spec.task.choices))
            errors = ErrorAnalysis(confusion=Confusion.model_validate(matrix))
        else:  # choices of the row's own: a matrix over their texts means nothing; positions do
            errors = ErrorAnalysis(by_position=ByPosition.model_validate(by_position(list(prepared.gold), chosen)))
        return Scored(examples, metrics, ci, tokens, errors=errors)

    def predict(self, prepared: PreparedCandidate, backend: Backend, rows: Sequence[PerturbedRow]) -> list[str]:
        rendered = list(_rendered(prepared, rows))
        prompts = [prepared.render(fields, row.choices, label) for row, fields, label in rendered]
        _, decisions = prepared.choice_answers(  # calibrated as the candidate is, with its perturbed row's demos
            backend,
            self._requests(prepared, [(row.id, p, row.choices or []) for p, row in zip(prompts, rows)], "perturbed"),
            [(fields, row.choices or []) for row, fields, _ in rendered],
        )
        return [
            row.choices[max(range(len(row.choices)), key=lambda k: scores[k])]
            for scores, row in zip(decisions, rows)
            if row.choices is not None
        ]

    def answer_of(self, example: ExampleResult) -> str:
        return example.output

    def label_changes(self, ref: Sequence[Any], cur: Sequence[Any]) -> list[dict[str, Any]]:
        """Each gold label's recall in the baseline and now, on the shared examples, for the labels that
        gained or lost (most lost first)."""
        by_label: dict[str, list[tuple[float, float]]] = {}
        for r, c in zip(ref, cur):
            by_label.setdefault(str(c.target), []).append((r.values["accuracy"], c.values["accuracy"]))
        changes = []
        for label, pairs in by_label.items():
            before, now = sum(b for b, _ in pairs) / len(pairs), sum(n for _, n in pairs) / len(pairs)
            if before != now:
                changes.append(
                    {"label": label, "examples": len(pairs), "baseline": before, "current": now, "delta": now - before}
                )
        return sorted(changes, key=lambda change: change["delta"])


def _rendered(prepared: PreparedCandidate, rows: Sequence[PerturbedRow]):
    """(the perturbed row, all its fields with the perturbed ones replaced, its label) of each perturbed row."""
    full = {row.id: row for row in prepared.dataset.rows}
    for perturbed in rows:
        row = full[perturbed.id]
        yield perturbed, {**row.fields, **perturbed.fields}, f"{row_label(prepared.dataset, row)} (perturbed)"


# --------------------------------------------------------------------------- generate


FAILURE_SHAPES = ("empty", "over_long", "wrong_format", "wrong_value")


def failure_shape(example: ExampleResult, max_new_tokens: int) -> str | None:
    """How a wrong generated answer is wrong: empty; cut at ``max_new_tokens`` (over-long); the right value
    in a form the scorer does not accept, or nothing the scorer could read (wrong format); or a readable
    answer that is not the target (wrong value)."""
    if example.correct:
        return None
    if not example.output.strip():
        return "empty"
    if example.details.get("output_tokens", 0) >= max_new_tokens:
        return "over_long"
    targets = example.target if isinstance(example.target, list) else [example.target]
    text = example.output.casefold()
    if any(str(t).strip() and str(t).casefold().strip() in text for t in targets if t is not None):
        return "wrong_format"
    if "extracted" not in example.details and "judge" not in example.details:
        return "wrong_format"
    return "wrong_value"


def failure_shapes(examples: Sequence[ExampleResult], max_new_tokens: int) -> dict[str, int]:
    """How many wrong answers have each shape (see :func:`failure_shape`)."""
    shapes = [failure_shape(e, max_new_tokens) for e in examples]
    return {shape: shapes.count(shape) for shape in FAILURE_SHAPES}


def _graded(prepared: PreparedCandidate, scorer: Any, rows: list[int], responses: Sequence[Any]) -> Graded:
    """Every output scored: by a model-graded scorer in one go, or by a plain scorer one by one."""
    outputs = [r.text for r in responses]
    if isinstance(scorer, ModelGradedScorer) or hasattr(scorer, "grade"):  # (a re-imported module's class too)
        return scorer.grade(prepared, rows, outputs)
    return Graded([scorer(output, prepared.gold[i]) for i, output in zip(rows, outputs)])


@register_task_kind("generate")
class Generate(TaskKind):
    """Generate text and score it with the task's scorer; with ``repeats`` > 1, sampled several times."""

    metrics = ("accuracy", "score")
    per_example = ("accuracy", "score")
    learns_to_stop = True
    decodes = True

    def check(self, task: TaskConfig) -> None:
        if task.repeats > 1 and task.temperature == 0:
            raise ValueError(
                "`repeats` needs sampled generation: greedy decoding (temperature 0) gives the same "
                "output every time; set `temperature:` above 0 or remove `repeats:`"
            )

    def check_suite(self, task: TaskConfig, base_dir: Path) -> ScoreFn | ModelGradedScorer | None:
        from evalkit.errors import ScorerError
        from evalkit.scoring import build_scorer, scorer_needs_target

        try:
            scorer = build_scorer(task.scorer_name, task.scorer_options, base_dir=base_dir)
        except ScorerError as exc:
            raise TaskProblem(exc.message, "task", "scorer", fix=exc.fix) from None
        if task.target is None and scorer_needs_target(task.scorer_name):
            raise TaskProblem(
                f"scorer '{task.scorer_name}' compares with a target, but the task has no `target:`",
                "task",
                fix="add `target: <row field with the expected answer>`",
            )
        return scorer

    def row_answers(self, spec: SuiteSpec, dataset: Dataset, row: Row) -> tuple[list[str] | None, Any]:
        target = spec.task.target
        return None, row_field(dataset, row, target, "target") if target else None

    def gold_text(self, spec: SuiteSpec, dataset: Dataset, row: Row) -> Any:
        return row.fields.get(spec.task.target) if spec.task.target else None

    def completion(self, spec: SuiteSpec, prepared: PreparedCandidate, index: int) -> str:
        from evalkit.errors import TrainingError

        target = prepared.gold[index]
        if target is None:
            raise TrainingError(
                "a generate task needs `target:` to train an adapter (the text the model learns)",
                path=spec.path,
                fix="add `target: <row field with the expected output>` to `task:`",
            )
        if isinstance(target, list) and target:  # several acceptable answers: learn the first
            target = target[0]
        text = target if isinstance(target, str) else json.dumps(target, ensure_ascii=False)
        return spec.task.choice_prefix + text

    def _request(
        self, prepared: PreparedCandidate, prompt: tuple[str, Turns], row_id: str, repeat: int, origin_repeat: int | str
    ) -> GenerateRequest:
        task = prepared.spec.task
        return GenerateRequest(
            prompt[0],
            task.max_new_tokens,
            tuple(task.stop),
            temperature=task.temperature,
            top_p=task.top_p,
            seed=sample_seed(task.seed, row_id, repeat),
            origin=origin(prepared.spec, prepared.candidate, row_id, origin_repeat),
            messages=prompt[1],
        )

    def score(self, prepared: PreparedCandidate, backend: Backend) -> Scored:
        """Generate and score every row; with ``repeats`` > 1, each row is sampled that many times and its
        accuracy is its pass rate (the share of repeats that were correct)."""
        task = prepared.spec.task
        scorer = prepared.spec.scorer()
        rows = prepared.dataset.rows
        responses = backend.generate(
            [
                self._request(prepared, prompt, row.id, r, r)
                for r in range(task.repeats)
                for row, prompt in zip(rows, zip(prepared.prompts, prepared.turns))
            ]
        )
        tokens = {"prompt": sum(r.prompt_tokens for r in responses), "output": sum(r.output_tokens for r in responses)}
        graded = _graded(prepared, scorer, [i for _ in range(task.repeats) for i in range(len(rows))], responses)
        examples = []
        for i, (row, prompt, target) in enumerate(zip(rows, prepared.prompts, prepared.gold)):
            runs = [responses[r * len(rows) + i] for r in range(task.repeats)]
            scores = [graded.scores[r * len(rows) + i] for r in range(task.repeats)]
            examples.append(self._example(row, prompt, target, runs, scores))
        n = len(examples)
        accuracy_values = [e.pass_rate if e.pass_rate is not None else float(e.correct) for e in examples]
        values = [e.score for e in examples]
        return Scored(
            examples,
            {"accuracy": sum(accuracy_values) / n, "score": sum(values) / n},
            {"accuracy": mean_interval(accuracy_values), "score": mean_interval(values)},
            tokens,
            judge=graded.record,
            failures=graded.failures,
            errors=ErrorAnalysis(failure_shapes=failure_shapes(examples, task.max_new_tokens)),
        )

    @staticmethod
    def _example(row: Row, prompt: str, target: Any, runs: list, scored: list) -> ExampleResult:
        first, first_score = runs[0], scored[0]
        details: dict[str, Any] = {"output_tokens": first.output_tokens}
        if first_score.extracted is not None:
            details["extracted"] = first_score.extracted
        if first_score.details is not None:
            details["judge"] = dict(first_score.details)
        pass_rate = None
        if len(runs) > 1:
            pass_rate = sum(bool(s.correct) for s in scored) / len(runs)
            details.update(outputs=[res.text for res in runs], flaky=0 < pass_rate < 1)
        return ExampleResult(
            id=row.id,
            row=row.number,
            prompt=prompt,
            output=first.text,
            target=target,
            correct=bool(first_score.correct) if pass_rate is None else pass_rate >= 0.5,
            score=sum(float(s.value) for s in scored) / len(runs),
            details=details,
            pass_rate=pass_rate,
        )

    def outputs(self, prepared: PreparedCandidate, backend: Backend) -> list[str]:
        """Each row's output (its first sample), unscored: what a pairwise judge compares another with."""
        rows = prepared.dataset.rows
        requests = [
            self._request(prepared, prompt, row.id, 0, 0)
            for row, prompt in zip(rows, zip(prepared.prompts, prepared.turns))
        ]
        return [r.text for r in backend.generate(requests)]

    def predict(self, prepared: PreparedCandidate, backend: Backend, rows: Sequence[PerturbedRow]) -> list[str]:
        requests = [
            self._request(prepared, prepared.render_with_turns(fields, row.choices, label), row.id, 0, "perturbed")
            for row, fields, label in _rendered(prepared, rows)
        ]
        return [answer_text(r.text) for r in backend.generate(requests)]

    def answer_of(self, example: ExampleResult) -> str:
        return answer_text(example.output)

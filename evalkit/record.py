"""The on-disk records, typed: a run folder's ``results.json`` and ``examples.jsonl`` rows, and the committed
``baseline.json``. The JSON schemas that every reader checks a file against are generated from these
models, so the documented shape and the checked shape are one.

Each model lists what the readers rely on; other keys are kept as they are (``extra="allow"``), so a
record written by an evalkit that adds fields still reads. Fields that older records lack are optional.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RUN_SCHEMA_VERSION = 3  # 2: baseline comparisons, run ids, repeats (pass_rate); 3: per-row choices by position
READABLE_RUN_VERSIONS = (1, 2, 3)
BASELINE_KIND = "evalkit-baseline"
BASELINE_VERSION = 1


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# --------------------------------------------------------------------------- results.json


class ModelInfo(_Open):
    name: str
    fingerprint: str | None = None


class RunInfo(_Open):
    """The run's header: when, from which commit, with which row limit and baseline."""

    run_id: str | None = None
    started: str | None = None
    finished: str | None = None
    git_commit: str | None = None
    evalkit_version: str | None = None
    row_limit: int | None = None
    baseline: dict[str, Any] | None = None
    models: list[ModelInfo] = Field(default_factory=list)


class AdapterInfo(_Open):
    """The LoRA adapter behind a candidate, as it was when the run used it (training curves included)."""

    name: str | None = None
    content_hash: str | None = None
    train_s: float | None = None
    trainable_parameters: int | None = None
    adapter_bytes: int | None = None
    loss_curve: list[dict[str, Any]] | None = None
    validation: list[dict[str, Any]] | None = None
    epochs: list[dict[str, Any]] | None = None  # per epoch: train_loss, val_loss, val_accuracy
    best_epoch: float | None = None  # the epoch whose weights the adapter keeps
    overfitting: dict[str, Any] | None = None  # epoch, train_loss, val_loss, best_epoch, best_val_loss, patience
    search: dict[str, Any] | None = None  # the hyperparameter search: objective, best, each trial's curves


class PolicyInfo(BaseModel):
    """When a change against the baseline fails a candidate (a suite's ``baseline:`` section)."""

    model_config = ConfigDict(extra="forbid")
    metric: str
    max_drop: float
    alpha: float
    strict: bool


class MetricChange(_Open):
    """One metric on the examples both sides share: before, now, and the 95% interval of the change."""

    baseline: float
    current: float
    delta: float
    ci95: tuple[float, float]
    examples: int
    baseline_all: float | None = None  # the baseline's value on all of its examples


class Flip(_Open):
    """An example whose gated metric changed since the baseline."""

    id: str | int
    direction: Literal["worse", "better"]
    baseline: float
    current: float
    baseline_output: Any = None  # what the baseline answered (its first characters)


class Gate(_Open):
    """The gated metric's drop and the exact McNemar test on the flips."""

    metric: str
    drop: float
    p_value: float
    worse: int
    better: int


class LabelChange(_Open):
    """A classifier's gold label whose recall changed since the baseline, on the shared examples."""

    label: str
    examples: int
    baseline: float
    current: float
    delta: float


class Comparison(_Open):
    """A candidate against its baseline entry (built by :func:`evalkit.compare.compare`). Fields that a
    comparison did not reach (no gate without shared examples, ...) stay unset and are not written."""

    status: str | None = None
    regressed: bool = False
    reason: str | None = None
    policy: PolicyInfo | None = None
    changes: list[str] = Field(default_factory=list)
    shared: int | None = None
    only_current: int | None = None
    only_baseline: int | None = None
    metrics: dict[str, MetricChange] = Field(default_factory=dict)
    flipped: list[Flip] = Field(default_factory=list)
    labels: list[LabelChange] | None = None
    gate: Gate | None = None

    def as_json(self) -> dict[str, Any]:
        """As results.json holds it: the fields this comparison set, as plain JSON values."""
        return self.model_dump(mode="json", exclude_unset=True)


class RobustFlip(_Open):
    id: str | int
    change: str
    before: str
    after: str
    original: dict[str, str]
    perturbed: dict[str, str]
    choices: list[str] | None = None
    perturbed_choices: list[str] | None = None


class Robustness(_Open):
    held: int
    examples: int
    tries: int
    perturbations: list[str]
    wall_s: float
    flipped: list[RobustFlip]


class Calibration(_Open):
    """A judge's measured agreement with the human verdicts of its calibration rows."""

    file: str
    n: int = Field(ge=0)
    agree: int = Field(ge=0)
    accuracy: float
    accuracy_ci: tuple[float, float]
    kappa: float
    kappa_ci: tuple[float, float]
    min_agreement: float | None = None
    trusted: bool
    wrong: list[dict[str, Any]] = Field(default_factory=list)


class JudgeInfo(_Open):
    """A model-graded scorer: who judged, how it was read, and how far it can be trusted."""

    mode: str
    grades: list[str]
    judges: list[ModelInfo]
    sha256: str
    rubric: str | None = None
    calibration: Calibration | None = None
    pairwise: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None


class CandidateEntry(_Open):
    """One candidate of one suite: metrics with 95% intervals, what produced them, the verdict's inputs."""

    task: str
    n: int = Field(ge=0)
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    failures: list[str]
    passed: bool | None = None
    repeats: int | None = None
    dataset_hash: str | None = None
    template_sha256: str | None = None
    prompts_sha256: str | None = None
    model_fingerprint: str | None = None
    adapter: AdapterInfo | None = None
    cost: dict[str, Any] = Field(default_factory=dict)
    baseline: Comparison | None = None
    robustness: Robustness | None = None
    judge: JudgeInfo | None = None
    expected_failure: str | None = None  # the reason of the candidate's xfail marker


class RunRecord(_Open):
    """``results.json``: the run's header and every candidate's entry, by suite."""

    schema_version: int
    run: RunInfo
    suites: dict[str, Annotated[dict[str, CandidateEntry], Field(min_length=1)]]


class ExampleDetails(_Open):
    """What a task kind adds to an example; the values a comparison reads are typed."""

    correct_norm: bool | float = False  # classify: right by length-normalised log-likelihood
    invariance: float = 1.0  # robustness: 1 when the answer held under every perturbation
    flaky: Any = None  # repeats: whether the outcome varied


class ExampleRow(_Open):
    """One line of ``examples.jsonl``: one example of one candidate."""

    suite: str
    candidate: str
    id: str | int
    correct: bool
    score: float
    row: int | None = None
    prompt: str | None = None
    pass_rate: float | None = None
    details: ExampleDetails | None = None


# --------------------------------------------------------------------------- baseline.json


class BaselineExample(_Open):
    id: str
    values: dict[str, float]


class BaselineCandidate(_Open):
    task: str | None = None
    n: int = Field(ge=0)
    metrics: dict[str, float]
    hashes: dict[str, Any]
    examples: list[BaselineExample]


class BaselineSuite(_Open):
    suite_path: str
    candidates: dict[str, BaselineCandidate]


class BaselineFile(_Open):
    """``reports/baseline.json``: per suite and candidate, the metrics and each example's values."""

    kind: Literal["evalkit-baseline"]
    version: Literal[1]
    suites: dict[str, BaselineSuite]


@functools.cache
def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of ``model``: what a file must look like to be read. Generated on
    first use (not at import: the plugin's start-up never needs it)."""
    return model.model_json_schema(mode="validation")


@functools.cache
def _validator(model: type[BaseModel]) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(json_schema(model))


def schema_problem(model: type[BaseModel], document: Any) -> str | None:
    """Where ``document`` departs from ``model``'s schema and how ("suites/x/y/n: 'a' is not of type
    'integer'"), or None."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(model).iter_errors(document))
    if error is None:
        return None
    return f"{'/'.join(str(p) for p in error.absolute_path) or 'the top level'}: {error.message}"


def parse_json(text: str, *, path: Path, what: str, fix: str) -> Any:
    """``text`` parsed as JSON; an EvalkitError naming the file and line ("the {what} is not valid JSON")."""
    from evalkit.errors import EvalkitError

    try:
        return json.loads(text)
    except ValueError as exc:
        raise EvalkitError(
            f"the {what} is not valid JSON: {getattr(exc, 'msg', exc)}",
            path=path,
            line=getattr(exc, "lineno", None),
            fix=fix,
        ) from None

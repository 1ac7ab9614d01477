"""The on-disk records, typed: a run folder's ``results.json`` and ``examples.jsonl`` rows, the committed
``baseline.json``, and an adapter's ``training.json``. The JSON schemas that every reader checks a file
against are generated from these models, so the documented shape and the checked shape are one.

Each model lists what the readers rely on; other keys are kept as they are (``extra="allow"``), so a
record written by an evalkit that adds fields still reads. Fields that older records lack are optional.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

RUN_SCHEMA_VERSION = 3  # 2: baseline comparisons, run ids, repeats (pass_rate); 3: per-row choices by position
READABLE_RUN_VERSIONS = (1, 2, 3)
BASELINE_KIND = "evalkit-baseline"
BASELINE_VERSION = 1


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")

    def as_json(self) -> dict[str, Any]:
        """As the file holds it: the fields this record set (and any it was read with), as JSON values."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


# --------------------------------------------------------------------------- results.json


class ModelInfo(_Open):
    name: str
    fingerprint: str | None = None


class BaselineUse(_Open):
    """The baseline a run compared with, and whether the run wrote it."""

    path: str | None = None
    updated: bool = False
    mode: str | None = None  # how it was written: update or merge
    candidates: int | None = None  # how many candidates it wrote


class RunInfo(_Open):
    """The run's header: when, from which commit, with which row limit and baseline."""

    run_id: str | None = None
    started: str | None = None
    finished: str | None = None
    git_commit: str | None = None
    evalkit_version: str | None = None
    row_limit: int | None = None
    baseline: BaselineUse | None = None
    models: list[ModelInfo] = Field(default_factory=list)


# an adapter's curves and search, as training.json and the run record keep them


class LossPoint(_Open):
    """One logged training step."""

    step: int
    epoch: float
    loss: float


class ValidationPoint(_Open):
    """One validation, after an epoch: completion loss and the suite's accuracy on the validation rows."""

    epoch: float
    step: int
    loss: float
    accuracy: float


class EpochRow(_Open):
    """One validated epoch: the mean training loss of its steps (None when none was logged), validation loss
    and accuracy."""

    epoch: float
    train_loss: float | None = None
    val_loss: float
    val_accuracy: float


class Overfitting(_Open):
    """The first epoch that ends ``patience`` epochs of rising validation loss while training loss fell."""

    epoch: float
    train_loss: float
    val_loss: float
    best_epoch: float
    best_val_loss: float
    patience: int


class FoldRow(_Open):
    """One fold of a cross-validated search trial: its best validation accuracy and its epochs."""

    fold: int
    best_val_accuracy: float
    epochs: list[EpochRow]


class SearchBest(_Open):
    trial: int
    value: float
    params: dict[str, Any]


class TrialSummary(_Open):
    """A search trial as a run record keeps it."""

    number: int | None = None
    state: str | None = None
    params: dict[str, Any] | None = None
    value: float | None = None
    epochs: list[EpochRow | FoldRow] | None = None
    pruned_at_epoch: float | None = None
    seconds: float | None = None


class SearchSummary(_Open):
    """The search as a run record keeps it: each trial's settings, state and per-epoch curves."""

    objective: str | None = None
    direction: str | None = None
    complete: int | None = None
    pruned: int | None = None
    seconds: float | None = None
    best: SearchBest | None = None
    trials: list[TrialSummary] = Field(default_factory=list)

    @classmethod
    def of(cls, search: TrainingSearch) -> SearchSummary:
        keys = {"objective", "direction", "complete", "pruned", "seconds", "best"}
        trial_keys = set(TrialSummary.model_fields)
        return cls(
            **{k: getattr(search, k) for k in keys},
            trials=[TrialSummary(**{k: getattr(t, k) for k in trial_keys}) for t in search.trials],
        )


class AdapterInfo(_Open):
    """The LoRA adapter behind a candidate, as it was when the run used it (training curves included): a view
    of its :class:`TrainingRecord` (:meth:`of`). Fields that older run records lack are optional."""

    name: str | None = None
    path: str | None = None
    content_hash: str | None = None
    base_model_fingerprint: str | None = None
    trained_now: bool | None = None
    best_validation_accuracy: float | None = None
    train_s: float | None = None
    trainable_parameters: int | None = None
    adapter_bytes: int | None = None
    contamination: list[str] | None = None  # training rows that duplicate golden test rows
    # the curves as trained, so a report rendered later shows this adapter, not a retrained one
    loss_curve: list[LossPoint] | None = None
    validation: list[ValidationPoint] | None = None
    epochs: list[EpochRow] | None = None  # per epoch: train_loss, val_loss, val_accuracy
    best_epoch: float | None = None  # the epoch whose weights the adapter keeps
    overfitting: Overfitting | None = None
    search: SearchSummary | None = None  # the hyperparameter search: objective, best, each trial's curves

    @classmethod
    def of(
        cls, record: TrainingRecord, *, name: str, path: str, trained_now: bool, contamination: list[str]
    ) -> AdapterInfo:
        return cls(
            name=name,
            path=path,
            content_hash=record.content_hash,
            base_model_fingerprint=record.base_model_fingerprint,
            trained_now=trained_now,
            best_validation_accuracy=record.best_validation_accuracy,
            train_s=record.train_s(),
            trainable_parameters=record.trainable_parameters,
            adapter_bytes=record.adapter_bytes,
            contamination=contamination,
            loss_curve=record.loss_curve,
            validation=record.validation,
            epochs=record.epochs,
            best_epoch=record.best_epoch,
            overfitting=record.overfitting,
            search=SearchSummary.of(record.search) if record.search is not None else None,
        )


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
    """The perturbation search of a candidate's rows (see :mod:`evalkit.robustness`)."""

    cached: bool | None = None
    perturbations: list[str]
    tries: int
    seed: int | None = None
    examples: int
    held: int
    invariance: float | None = None
    model_calls: int | None = None
    shrink_batches: int | None = None
    wall_s: float
    flipped: list[RobustFlip]


class CacheInfo(_Open):
    """The result cache's work for one candidate: hits, misses and why, and the model time it measured."""

    hits: int = 0
    misses: int = 0
    shared: int = 0
    compute_s: float = 0.0
    miss_reasons: dict[str, int] = Field(default_factory=dict)
    first_miss: dict[str, str] = Field(default_factory=dict)  # reason -> the first example it applied to


class LabelStats(_Open):
    precision: float
    recall: float
    support: int


class Confusion(_Open):
    """A classifier's confusion matrix over its fixed labels (rows: gold, columns: predicted)."""

    labels: list[str]
    matrix: list[list[int]]
    per_label: dict[str, LabelStats]


class PositionStats(_Open):
    """One choice position (A, B, ...): how often the gold answer sat there, was right, and was chosen."""

    position: str
    gold: int
    correct: int
    accuracy: float | None
    chosen: int
    chosen_share: float


class ByPosition(_Open):
    """For choices that come with each row: accuracy by the gold answer's position, and position bias."""

    positions: list[PositionStats]
    wrong: int


class ErrorAnalysis(_Open):
    """Where a candidate errs: a fixed label set's confusion matrix, per-row choices by position, or a
    generator's wrong answers by shape."""

    confusion: Confusion | None = None
    by_position: ByPosition | None = None
    failure_shapes: dict[str, int] | None = None


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
    wrong: list[dict[str, Any]] = Field(default_factory=list)
    per_judge: list[dict[str, Any]] | None = None  # with several judges: each one's agreement
    trusted: bool
    folds: FoldsAgreement | None = None  # `calibration: {folds: k}`: the figures above pool the held-out folds
    adapter: str | None = None  # the judge adapter, when the judge is a trained one
    training_s: float | None = None  # its training time
    ms_per_judgement: float | None = None  # model time of one judgement, measured on the calibration rows
    prompted: Calibration | None = None  # a trained judge: the same model without its adapter, on the same rows


class FoldsAgreement(_Open):
    """k judges, each trained without one fold of the labelled file and graded on it; the judge that gates
    is trained on every row."""

    folds: int
    accuracy: list[float]
    kappa: list[float]
    accuracy_mean: float
    accuracy_stdev: float
    kappa_mean: float
    kappa_stdev: float
    trained_on: int  # rows the gating judge is trained on (all of them)


Calibration.model_rebuild()


class JudgeInfo(_Open):
    """A model-graded scorer: who judged, how it was read, and how far it can be trusted. The fields are in
    the order results.json has always held them."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    mode: str
    read: str | None = None
    grades: list[str]
    pass_grade: str | float | None = Field(default=None, alias="pass")  # the grade (or score) that passes
    rubric: str | None = None
    rubric_sha256: str | None = None
    judges: list[ModelInfo]
    sha256: str
    judges_agreement: list[dict[str, Any]] | None = None
    pairwise: dict[str, Any] | None = None
    calibration: Calibration | None = None
    compute_s: float | None = None  # the judges' model time on this candidate
    cache: CacheInfo | None = None  # the judges' requests in the result cache


class OptimismGap(_Open):
    """A searched prompt's best dev score against its one read of the golden set, and the difference."""

    dev: float
    dev_ci95: tuple[float, float]
    test: float
    test_ci95: tuple[float, float]
    gap: float  # dev - test: how far the search's own score overstated the golden-set accuracy
    gap_ci95: tuple[float, float]


class PromptSearchInfo(_Open):
    """The prompt search behind a candidate (its artifact under prompts/.search/), as the run used it."""

    artifact: str
    objective: str
    settings: dict[str, Any]  # the chosen value of every searched option
    best_trial: int
    dev_accuracy: float
    dev_ci95: tuple[float, float]
    dev_n: int
    trials: int
    pruned: int
    trial_scores: list[
        float | None
    ]  # each trial's dev score (a pruned one's last step; None: a repeat), in trial order
    search_s: float  # every trial's time: a one-time cost, like training
    searched_now: bool = False
    optimism: OptimismGap | None = None


class DecisionSide(_Open):
    candidate: str
    accuracy: float
    ci95: tuple[float, float]
    search_s: float | None = None
    train_s: float | None = None


class Decision(_Open):
    """A suite's best prompt against its best adapter on the rows both answered (exact McNemar test)."""

    best_prompt: DecisionSide
    best_adapter: DecisionSide
    shared: int
    prompt_only_right: int
    adapter_only_right: int
    p_value: float


class CandidatePrice(_Open):
    """One candidate priced: its accuracy, what 1,000 of its requests cost, and its one-time costs."""

    accuracy: float
    ci95: tuple[float, float]
    per_1k_requests: float
    priced_by: str  # tokens (the model has token prices) or time (measured model time)
    training: float | None = None  # an adapter's one-time training cost
    train_s: float | None = None
    pareto_optimal: bool = False  # no other candidate is both as accurate and as cheap per request
    search: float | None = None  # a searched prompt's one-time search cost
    search_s: float | None = None


class BreakEven(_Open):
    """When an adapter's training is paid back by its cheaper requests against a prompt-only candidate."""

    adapter: str
    against: str
    requests: int | None  # None: it never pays back
    accuracy_gain: float
    training: float
    train_s: float | None = None
    saving_per_1k: float
    one_time: float | None = None  # with a prompt search on either side: the one-time costs, net
    adapter_search_s: float | None = None
    prompt_search_s: float | None = None
    adapter_model: str | None = None  # the models of the two sides, where they differ
    against_model: str | None = None


class SuiteCosts(_Open):
    candidates: dict[str, CandidatePrice]
    break_even: list[BreakEven] = Field(default_factory=list)


class RunCosts(_Open):
    """What each candidate costs per 1,000 requests, and when adapters pay back (``[tool.evalkit.costs]``)."""

    prices: dict[str, Any]  # the prices as [tool.evalkit.costs] set them (evalkit.costs.CostModel)
    suites: dict[str, SuiteCosts]


class GoldenReads(_Open):
    """How often a suite's golden set has been read: the distinct configurations measured on its rows (see
    :mod:`evalkit.golden`), and the best candidate's accuracy with its interval adjusted for that many looks."""

    dataset_hash: str = Field(description="the golden set counted (its content hash)")
    configurations: int = Field(ge=0, description="distinct configurations it has judged, this run's included")
    new_this_run: int = Field(ge=0, description="of those, the ones first measured in this run")
    max_reads: int | None = Field(description="the suite's budget (`max_reads:`), or None")
    strict: bool = Field(description="past the budget the suite fails (else it warns)")
    over_budget: bool = Field(description="configurations is past max_reads")
    counted: bool = Field(True, description="false for a run limited to its first rows, which is not counted")
    message: str | None = Field(None, description="the warning or failure when over budget")
    best: str | None = Field(None, description="this run's most accurate candidate of the suite")
    best_accuracy: float | None = None
    best_ci95: tuple[float, float] | None = Field(None, description="its ordinary 95% interval")
    selection_ci95: tuple[float, float] | None = Field(
        None, description="its interval at level 1 - 0.05/configurations (Bonferroni over the looks)"
    )

    @property
    def fails(self) -> bool:
        """Over a strict budget: a candidate read past it fails."""
        return self.over_budget and self.strict


class Disagreement(_Open):
    """A row on which a run and its reference differ: the metric's values and both answers."""

    id: str | int
    candidate: float | None = None  # the run's value of the compared metric (None: an agreement check only)
    reference: float | None = None
    output: Any = None  # what the run answered (its first characters)
    reference_output: Any = None


class PairCheck(_Open):
    """One `compare:` check of a run against its reference, on the rows both answered (docs/models.md)."""

    reference: str
    shared: int = Field(ge=0, description="rows both runs answered")
    passed: bool
    failures: list[str] = Field(default_factory=list)
    metric: str | None = None  # non-inferiority: the metric and the paired t-test on its differences
    candidate_value: float | None = None
    reference_value: float | None = None
    difference: float | None = None  # candidate - reference, on the shared rows
    lower_bound: float | None = None  # the one-sided (1 - alpha) lower confidence bound of the difference
    p_value: float | None = None  # H0: difference <= -max_drop
    max_drop: float | None = None
    alpha: float | None = None
    agree: int | None = None  # agreement: rows whose predictions are equal
    agreement: float | None = None
    agreement_ci95: tuple[float, float] | None = None  # Wilson
    kappa: float | None = None
    kappa_ci95: tuple[float, float] | None = None  # bootstrap over rows
    min_agreement: float | None = None
    min_kappa: float | None = None
    disagreeing: list[Disagreement] = Field(default_factory=list, description="the first rows that differ")


class PairRow(_Open):
    """Two runs of a suite on their shared rows: the difference, exact McNemar p and Holm-adjusted p."""

    first: str
    second: str
    shared: int
    first_value: float
    second_value: float
    difference: float  # first - second
    first_only: int  # rows only the first got right (or scored higher on)
    second_only: int
    p_value: float
    p_holm: float


class PairedTable(_Open):
    """Every pair of a suite's runs, their p-values adjusted together (Holm) for the family of pairs."""

    metric: str
    pairs: list[PairRow]


class Latency(_Open):
    """What a served run's requests took, measured on the requests sent this run (cache hits excluded)."""

    requests: int = Field(ge=0, description="requests sent to the server this run")
    cache_hits: int = Field(ge=0, description="answers read from the result cache, not measured")
    concurrency: int | None = None  # requests in flight
    cold: bool = Field(description="the first requests this session sent to that server (its warm-up included)")
    p50_s: float | None = None
    p95_s: float | None = None
    requests_per_s: float | None = None
    output_tokens_per_s: float | None = None
    wall_s: float | None = None  # from the first request sent to the last answer


class TaskSource(_Open):
    """Where an lm-eval task's documents were read from."""

    kind: Literal["data_files", "mirror", "hub"] = Field(
        description="data_files: the suite's local files; mirror: the datasets mirror folder; hub: the Hugging Face hub"
    )
    dataset: str = Field(description="the hub dataset (and config) the task names")
    files: dict[str, str] = Field(default_factory=dict, description="split: file read, for data_files and mirror")
    revision: str | None = None


class LmEvalInfo(_Open):
    """An lm-evaluation-harness task run as a suite: what lm-eval built the requests from, and the metrics as
    lm-eval aggregates them (each task of a group, and the group's own aggregate)."""

    task: str = Field(description="the task or group the suite names")
    version: str = Field(description="the lm_eval version that built the requests and scored them")
    num_fewshot: dict[str, int] = Field(default_factory=dict, description="few-shot examples per task")
    fewshot_seed: int
    sources: dict[str, TaskSource] = Field(default_factory=dict, description="each task's data source")
    results: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="lm-eval's aggregated metrics per task and group (metric,filter keys)"
    )
    group_subtasks: dict[str, list[str]] = Field(default_factory=dict, description="each group's members")


class RetentionFlip(_Open):
    """A row of a standard suite the base model got right and the adapted model got wrong."""

    id: str
    target: Any = None
    base_output: str
    adapted_output: str


class RetentionCheck(_Open):
    """What an adapter forgot on one standard suite: the base model against the base model with the adapter,
    on the rows both answered, gated as the baseline gate is (a drop over max_drop with McNemar p < alpha)."""

    adapter: str
    suite: str = Field(description="the standard suite's name")
    suite_path: str
    base: float = Field(description="the base model's accuracy on the shared rows")
    adapted: float = Field(description="the adapted model's accuracy on the shared rows")
    delta: float = Field(description="adapted - base")
    ci95: tuple[float, float] = Field(description="95% interval of the paired difference (Newcombe)")
    shared: int = Field(ge=0)
    worse: int = Field(ge=0, description="rows right on the base model only")
    better: int = Field(ge=0, description="rows right with the adapter only")
    p_value: float = Field(description="exact McNemar test on the flipped rows")
    max_drop: float
    alpha: float
    lost: bool = Field(description="a significant loss: the drop is over max_drop and p < alpha")
    flips: list[RetentionFlip] = Field(default_factory=list, description="the first rows it got wrong (20 at most)")


class CandidateEntry(_Open):
    """One candidate of one suite: metrics with 95% intervals, what produced them, the verdict's inputs.
    A :class:`evalkit.results.CandidateResult` without its per-example rows; the fields are in the order
    results.json holds them. Fields that older records (or hand-written ones) lack are optional."""

    suite: str | None = None
    candidate: str | None = None
    suite_path: str | None = None
    task: str
    n: int = Field(ge=0)
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    thresholds: dict[str, str] = Field(default_factory=dict)
    failures: list[str]
    wall_s: float | None = None
    tokens: dict[str, int] = Field(default_factory=dict)
    model: str | None = None
    model_fingerprint: str | None = None
    dataset_hash: str | None = None
    template_sha256: str | None = None
    adapter: AdapterInfo | None = None
    baseline: Comparison | None = None
    repeats: int | None = None
    prompts_sha256: str | None = None
    task_sha256: str | None = None
    robustness: Robustness | None = None
    compute_s: float | None = None
    cache: CacheInfo | None = None
    judge: JudgeInfo | None = None
    errors: ErrorAnalysis | None = None
    expected_failure: str | None = None  # the reason of the candidate's xfail marker
    prompt_search: PromptSearchInfo | None = None
    compared: list[PairCheck] | None = None  # its `compare:` checks against other runs
    latency: Latency | None = None  # a served run's request latency and throughput
    lm_eval: LmEvalInfo | None = None  # an lm-eval task's requests, sources and aggregates
    retention: list[RetentionCheck] | None = None  # what its adapter forgot on standard suites
    passed: bool | None = None
    cost: dict[str, int | float] = Field(default_factory=dict)

    def hashes(self) -> dict[str, str | None]:
        """What produced this result, by content hash: dataset, template, prompts, model, adapter, judge."""
        return content_hashes(self)


class _Produced(Protocol):  # a CandidateResult, or a CandidateEntry
    @property
    def dataset_hash(self) -> str | None: ...
    @property
    def template_sha256(self) -> str | None: ...
    @property
    def prompts_sha256(self) -> str | None: ...
    @property
    def task_sha256(self) -> str | None: ...
    @property
    def model_fingerprint(self) -> str | None: ...
    @property
    def adapter(self) -> AdapterInfo | None: ...
    @property
    def judge(self) -> JudgeInfo | None: ...


def content_hashes(result: _Produced) -> dict[str, str | None]:
    """What produced a candidate's result (in memory, or its entry in a run record), by content hash:
    dataset, template, prompts, model, adapter, the task's settings (decoding, scorer; absent in records
    written before they were hashed), and the judge where a model grades it."""
    hashes = {
        "dataset": result.dataset_hash,
        "template": result.template_sha256,
        "prompts": result.prompts_sha256,
        "model": result.model_fingerprint,
        "adapter": result.adapter.content_hash if result.adapter is not None else None,
    }
    if result.task_sha256 is not None:
        hashes["task"] = result.task_sha256
    if result.judge is not None and result.judge.sha256:  # only model-graded suites name a judge
        hashes["judge"] = result.judge.sha256
    return hashes


class RunRecord(_Open):
    """``results.json``: the run's header and every candidate's entry, by suite."""

    schema_version: int
    run: RunInfo
    suites: dict[str, Annotated[dict[str, CandidateEntry], Field(min_length=1)]]
    decisions: dict[str, Decision] | None = None  # per suite with both a prompt and an adapter
    costs: RunCosts | None = None  # with prices: each candidate's cost and the break-even (evalkit.costs)
    golden: dict[str, GoldenReads] | None = None  # per suite: how often its golden set has been read
    pairs: dict[str, PairedTable] | None = None  # per suite with several runs: each pair's paired test

    def entries(self) -> list[tuple[str, str, CandidateEntry]]:
        """Every candidate's entry, as (suite, candidate, entry), in the record's order."""
        return [(suite, name, entry) for suite, candidates in self.suites.items() for name, entry in candidates.items()]


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


# --------------------------------------------------------------------------- training.json


class SearchTrial(_Open):
    """One trial of a hyperparameter search: its settings, how it ended, its per-epoch (or per-fold) curves."""

    number: int
    state: str  # complete or pruned
    params: dict[str, Any]
    value: float | None = None
    epochs: list[EpochRow | FoldRow] = Field(default_factory=list)
    pruned_at_epoch: float | None = None
    seconds: float | None = None
    retry_of: int | None = None


class TrainingSearch(_Open):
    """The hyperparameter search behind an adapter (Optuna): what it searched and every trial."""

    objective: str
    direction: str
    sampler: str | None = None
    pruner: str | None = None
    space: dict[str, Any] | None = None
    trials_asked: int | None = None
    complete: int
    pruned: int
    resumed_after: int | None = None
    seconds: float  # all trials' time, this run's and any interrupted run's
    seconds_this_run: float | None = None
    best: SearchBest
    trials: list[SearchTrial]


class TrainingData(_Open):
    path: str
    sha256: str
    rows: int
    train_rows: int
    validation_rows: int


class HeldOutFold(_Open):
    """A judge adapter trained without one fold, graded on it: the human and the judge's pass/fail verdicts."""

    rows: list[str]  # the fold's row ids, in order
    human: list[bool]
    judged: list[bool]
    agree: int
    accuracy: float
    kappa: float


class CrossValidation(_Open):
    folds: int
    accuracy: list[float]  # each fold's best validation accuracy; a judge's: its agreement on the held-out fold
    mean: float
    stdev: float
    held_out: list[HeldOutFold] | None = None  # a judge adapter's folds (`calibration: {folds: k}`)


class DataCheck(_Open):
    """What a check of the training data found before training (serious ones stop it)."""

    check: str
    message: str
    serious: bool = False


class TrainingRecord(_Open):
    """``training.json``: what an adapter depends on (its content hash and the parts of it), how training went
    and what it cost. The trainer builds it from what it measured; the adapter's identity, the published
    weights and the search are added when the adapter is published. A field a record lacks stays unset, and
    is not written back (``as_json``)."""

    adapter: str | None = None
    content_hash: str | None = None
    base_model_fingerprint: str | None = None
    examples_sha256: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    suite: str | None = None
    base_model: str | None = None
    task: str | None = None
    data: TrainingData | None = None
    template_sha256: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)  # the train: entry as trained (a search's best settings)
    loss_curve: list[LossPoint] = Field(default_factory=list)
    validation: list[ValidationPoint] = Field(default_factory=list)
    epochs: list[EpochRow] = Field(default_factory=list)
    overfitting: Overfitting | None = None
    best_validation_accuracy: float | None = None
    best_checkpoint: str | None = None
    best_epoch: float | None = None  # the epoch whose weights the adapter keeps
    cross_validation: CrossValidation | None = None
    processes: int = 1
    global_steps: int = 0
    epochs_run: float = 0.0
    stopped_early: bool = False
    resumed_from: str | None = None
    wall_seconds: float | None = None
    train_seconds: float
    tokens_per_second: float | None = None
    padding_fraction: float | None = None
    trainable_parameters: int
    total_parameters: int | None = None
    adapter_bytes: int | None = None
    adapter_sha256: str | None = None
    trained_at: str | None = None
    evalkit_version: str | None = None
    data_checks: list[DataCheck] = Field(default_factory=list)
    search: TrainingSearch | None = None

    def train_s(self) -> float:
        """The training's time, a search's trials included."""
        return round(self.train_seconds + (self.search.seconds if self.search is not None else 0.0), 3)


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

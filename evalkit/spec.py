"""A suite as the rest of evalkit reads it: the schema of a ``*.eval.yaml`` file (pydantic, with help text
on every field), which is also the validated suite itself. :mod:`evalkit.suite` reads a file into it, with
file:line errors, and places it: each candidate and adapter learns its name, its line and the folder its
paths are relative to, and the suite keeps its parsed thresholds, scorer and metric names.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from evalkit.backends.base import DEFAULT_MODEL, ModelConfig, StrictModel
from evalkit.gate import Threshold
from evalkit.harness.settings import LmEvalSettings, RetentionSettings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MARKER_HELP = (
    "pytest markers: a name (`slow`), or a name with its keyword arguments (`xfail: {reason: ..., strict: true}`)"
)
Marker = str | dict[str, dict[str, Any]]


def _check_markers(value: list[Marker]) -> list[Marker]:
    for marker in value:
        if isinstance(marker, dict) and len(marker) != 1:
            raise ValueError(f"a marker with arguments is one name and its arguments, got {list(marker)}")
    return value


__all__ = ["DEFAULT_MODEL", "Candidate", "ModelConfig", "SuiteSpec", "TrainSpec"]


class DatasetConfig(StrictModel):
    path: str = Field(description="JSONL/JSON/CSV/Parquet file or a saved `datasets` folder, relative to the suite")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N rows")
    id_field: str = Field("id", description="row field with a stable example id (else a hash of the row)")


class FewshotConfig(StrictModel):
    path: str = Field(description="rows to draw examples from, relative to the suite")
    k: int = Field(4, ge=0, le=64, description="number of examples")
    seed: int = Field(0, description="seed for the draw")
    select: Literal["random", "stratified", "nearest"] = Field(
        "random",
        description="random: k rows drawn with the seed; stratified: drawn evenly across the labels; "
        "nearest: for each row, the k pool rows most similar to it (TF-IDF, scikit-learn)",
    )
    order: Literal["drawn", "nearest_last"] = Field(
        "drawn", description="drawn: as selected (nearest: most similar first); nearest_last: most similar last"
    )


class ScorerConfig(StrictModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str


class TaskConfig(StrictModel):
    kind: str = Field(description="classify, generate, or a kind registered under evalkit.task_kinds")
    target: str | None = Field(None, description="row field holding the gold answer")
    choices: list[str] | None = Field(None, min_length=2)
    choices_field: str | None = None
    choice_prefix: str = " "
    max_new_tokens: int = Field(32, ge=1, le=4096)
    stop: list[str] = Field(default_factory=lambda: ["\n"])
    scorer: ScorerConfig = ScorerConfig(name="exact_match")
    temperature: float = Field(0.0, ge=0, le=10, description="0: greedy decoding; above 0: sampled generation")
    top_p: float = Field(
        1.0, gt=0, le=1, description="nucleus sampling: keep the smallest set of tokens with this mass"
    )
    repeats: int = Field(
        1, ge=1, le=100, description="samples per example with temperature > 0; the gate uses the mean"
    )
    seed: int = Field(0, description="seeds sampled generation (each example and repeat draws its own stream)")

    @field_validator("scorer", mode="before")
    @classmethod
    def _scorer_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def scorer_name(self) -> str:
        return self.scorer.name

    @property
    def scorer_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.scorer.model_dump().items() if k != "name"}


def _check_prompt_source(config: Any, what: str) -> None:
    """A prompt comes from exactly one of a file or inline text; a system turn needs the chat format."""
    if (config.prompt is None) == (config.template is None):
        raise ValueError(f"{what} needs exactly one of `prompt:` (a file) or `template:` (inline text)")
    if config.system is not None and not config.chat:
        raise ValueError("`system:` applies only with `chat: true`")


class _Placed(StrictModel):
    """A section that renders prompts (a candidate, a training set), placed in its suite file by the loader:
    its name, its line, and the folder its paths are relative to."""

    if TYPE_CHECKING:  # a field of each subclass, declared there so each keeps its own key order
        prompt: str | None
    _name: str = PrivateAttr("")
    _base: Path = PrivateAttr(Path("."))
    _line: int | None = PrivateAttr(None)

    def _place(self, name: str, base: Path, line: int | None) -> None:
        self._name, self._base, self._line = name, base, line

    def _resolved(self, relative: str) -> Path:
        return (self._base / relative).resolve()

    @property
    def name(self) -> str:
        return self._name

    @property
    def line(self) -> int | None:
        return self._line

    @property
    def prompt_path(self) -> Path | None:
        return self._resolved(self.prompt) if self.prompt else None


class LoraSettings(StrictModel):
    """The LoRA adapter's shape (peft ``LoraConfig``)."""

    r: int = Field(8, ge=1, le=1024, description="rank of the update matrices")
    alpha: float = Field(16, gt=0, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        description="names of the linear layers that get an adapter",
    )


class ValidationSettings(StrictModel):
    """Held-out training rows: early stopping, best checkpoint, optional k-fold cross-validation."""

    fraction: float = Field(0.1, ge=0, lt=1, description="share of training rows held out for validation")
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without improvement before stopping")
    folds: int | None = Field(None, ge=2, le=20, description="also run k-fold cross-validation and report its spread")


SEARCHABLE = (
    "learning_rate",
    "epochs",
    "batch_size",
    "gradient_accumulation_steps",
    "warmup_ratio",
    "weight_decay",
    "lr_scheduler",
    "lora.r",
    "lora.alpha",
    "lora.dropout",
)
SEARCH_OPTIONS = ("trials", "objective", "pruner", "seed", "space")


def gather_space(value: Any, options: Collection[str]) -> Any:
    """A `search:` block as written (its ``options`` beside the searched parameters) with the parameters
    gathered under ``space``, as the search settings hold them."""
    if not isinstance(value, dict) or "space" in value:
        return value
    kept = {k: v for k, v in value.items() if k in options}
    return {**kept, "space": {k: v for k, v in value.items() if k not in options}}


class SearchRange(StrictModel):
    """A numeric range to sample from: integers when both ends are integers, else floats."""

    low: int | float
    high: int | float
    log: bool = Field(False, description="sample on a log scale (both ends above zero)")
    step: int | float | None = Field(None, gt=0, description="sample on a grid of this step")

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low above 0")
        if self.log and self.step is not None:
            raise ValueError("a range takes `log` or `step`, not both")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)


class SearchSettings(StrictModel):
    """A hyperparameter search (Optuna) for one adapter: each key beyond the options below is a parameter of
    the `train:` entry (``lora.r`` for a LoRA setting) with a range ``{low, high, log}`` or a list of values."""

    trials: int = Field(ge=1, le=1000, description="trials to run (pruned ones included)")
    objective: Literal["validation_accuracy", "cv_accuracy", "validation_loss"] = Field(
        "validation_accuracy", description="what the best trial maximises (minimises, for the loss)"
    )
    pruner: Literal["median", "none"] = Field(
        "median", description="median: stop a trial whose validation after an epoch trails the median of earlier trials"
    )
    seed: int = Field(0, description="seeds the sampler (TPE), so a search picks the same trials again")
    space: dict[str, SearchRange | list[int | float | str]] = Field(description="parameter -> range or values")

    @model_validator(mode="before")
    @classmethod
    def _collect_space(cls, value: Any) -> Any:
        return gather_space(value, SEARCH_OPTIONS)

    @field_validator("space")
    @classmethod
    def _known_parameters(cls, space: dict[str, Any]) -> dict[str, Any]:
        if not space:
            raise ValueError(f"name at least one parameter to search, from: {', '.join(SEARCHABLE)}")
        for name, values in space.items():
            if name not in SEARCHABLE:
                raise ValueError(
                    f"'{name}' is not a searchable parameter (searchable: {', '.join(SEARCHABLE)}; "
                    f"options: {', '.join(o for o in SEARCH_OPTIONS if o != 'space')})"
                )
            if isinstance(values, list) and not values:
                raise ValueError(f"'{name}' lists no values")
        return space


class TrainConfig(_Placed):
    """How the bundled trainer produces one adapter (`train: <name>:` in a suite)."""

    output: str = Field(description="adapter folder, relative to the suite")
    data: str = Field(description="training rows with the same fields as the test set, relative to the suite")
    prompt: str | None = Field(None, description="Jinja2 template file, relative to the suite")
    template: str | None = Field(None, description="inline Jinja2 template")
    chat: bool = Field(False, description="render the text as the user turn of the model's chat template")
    system: str | None = Field(None, description="system message when chat is true")
    epochs: float = Field(3, gt=0, le=1000, description="passes over the training rows")
    learning_rate: float = Field(2e-4, gt=0, lt=1, description="peak learning rate (AdamW)")
    batch_size: int = Field(8, ge=1, le=4096, description="rows per optimiser step and device")
    gradient_accumulation_steps: int = Field(1, ge=1, description="batches accumulated per optimiser step")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of steps with a linear warm-up")
    weight_decay: float = Field(0.0, ge=0, lt=1, description="AdamW weight decay")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_length: int = Field(1024, ge=8, description="longest prompt + completion in tokens; longer rows are an error")
    precision: Literal["float32", "bfloat16"] = Field("float32", description="bfloat16: autocast mixed precision")
    lora: LoraSettings = LoraSettings()
    validation: ValidationSettings = ValidationSettings()
    seed: int = Field(0, description="seeds the split, the adapter's initial weights and the data order")
    allow_contamination: bool = Field(False, description="allow training rows that duplicate golden test rows")
    search: SearchSettings | None = Field(None, description="search hyperparameters with Optuna (see SearchSettings)")
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list, description="also hand the curves to these tools, under <reports>/training/<adapter>/"
    )
    retention: RetentionSettings | None = Field(
        None, description="standard suites this adapter is checked on for what it forgot (over the suite's own)"
    )
    judge: bool = Field(
        False,
        description="train the suite's judge: `data:` holds labelled verdicts (the row's fields, `output` and a "
        "human `verdict`); the prompt is the judge's rubric and the choices are its grades",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TrainConfig:
        if self.judge:
            if self.prompt is not None or self.template is not None or self.chat or self.system is not None:
                raise ValueError(
                    "a judge adapter is prompted as the judge is (its rubric, `chat` and `system`): drop "
                    "`prompt:`, `template:`, `chat:` and `system:` from this entry"
                )
            return self
        _check_prompt_source(self, "a training set")
        return self

    @model_validator(mode="after")
    def _searchable(self) -> TrainConfig:
        """Each searched value must be one this entry accepts: both ends of a range, every listed value."""
        if self.search is None:
            return self
        for name, values in self.search.space.items():
            for value in [values.low, values.high] if isinstance(values, SearchRange) else values:
                try:
                    self.with_values({name: value})
                except ValidationError as error:
                    problem = error.errors()[0]["msg"]
                    raise ValueError(f"search: {name} = {value!r} is not a valid value: {problem}") from None
        if self.search.objective != "cv_accuracy" and self.validation.fraction <= 0:
            raise ValueError(
                f"search objective {self.search.objective} needs validation rows (validation.fraction > 0)"
            )
        return self

    def with_values(self, values: dict[str, Any]) -> TrainConfig:
        """This entry with some parameters replaced (``lora.r`` names a LoRA setting), validated and placed."""
        data = self.model_dump(exclude={"search"})
        for name, value in values.items():
            section, _, key = name.rpartition(".")
            (data[section] if section else data)[key] = value
        return TrainConfig.model_validate(data).placed(self._name, self._base, self._line)

    def placed(self, name: str, base: Path, line: int | None) -> TrainConfig:
        """This entry as the suite file names it: its name, the folder its paths are relative to, its line."""
        self._place(name, base, line)
        return self

    @property
    def output_path(self) -> Path:
        return self._resolved(self.output)

    @property
    def data_path(self) -> Path:
        return self._resolved(self.data)

    def as_candidate(self) -> CandidateConfig:
        """The training prompt as a candidate, so rows render exactly as a candidate renders them."""
        candidate = CandidateConfig(prompt=self.prompt, template=self.template, chat=self.chat, system=self.system)
        return candidate.placed(self.name, self._base, self.line, ())

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that shapes the adapter's weights (not where it is written, nor the contamination gate)."""
        excluded = {"output", "data", "prompt", "template", "allow_contamination", "report_to", "retention"}
        if self.search is None:  # an entry without a search hashes as it did before searches existed
            excluded.add("search")
        if not self.judge:  # likewise an adapter that is not a judge's
            excluded.add("judge")
        return self.model_dump(exclude=excluded)


class RobustnessConfig(StrictModel):
    """Perturbation tests (`robustness:` in a suite): does each candidate keep its answers?"""

    perturbations: list[str] = Field(
        min_length=1,
        description="names: case, whitespace, typos, punctuation, distractor, choice_order, or registered ones",
    )
    examples: int = Field(40, ge=1, description="rows drawn (seeded) from the golden set")
    tries: int = Field(10, ge=1, le=1000, description="perturbations tried per row")
    seed: int = Field(0, description="seeds the row draw and every row's search")
    fields: list[str] | None = Field(
        None,
        min_length=1,
        description="row fields to perturb (default: every text field but the id, target and choices)",
    )
    shrink_calls: int = Field(64, ge=0, le=10000, description="model calls per flipped row spent shrinking its change")
    candidates: list[str] | None = Field(None, min_length=1, description="candidates to test (default: all)")


class BaselineConfig(StrictModel):
    """When a change against the committed baseline fails a candidate (`baseline:` in a suite)."""

    metric: str = Field(
        "accuracy",
        description="the metric gated against the baseline (a mean of one value per example: "
        "accuracy, acc_norm for classify, score for generate, or invariance)",
    )
    max_drop: float = Field(0.0, ge=0, le=1, description="largest drop of the metric that is never a regression")
    alpha: float = Field(0.05, gt=0, lt=1, description="a drop fails only when the paired McNemar test gives p < alpha")
    strict: bool = Field(False, description="fail on any drop, significant or not")


class MaxReads(StrictModel):
    """How many distinct configurations the golden set may judge before it is refreshed (`max_reads:`)."""

    limit: int = Field(ge=1, description="distinct configurations the golden set may judge")
    strict: bool = Field(False, description="past the limit, fail every candidate of the suite (default: warn)")


MAX_READS_HELP = (
    "how many distinct configurations (prompts, templates, models, adapters, judges) the golden set may judge "
    "before it is refreshed: a number (warn past it) or {limit: N, strict: true} (fail past it)"
)


PROMPT_SEARCHABLE = ("fewshot.k", "fewshot.select", "fewshot.order", "fewshot.seed", "template", "calibration")
PROMPT_SEARCHABLE_GENERATE = ("system", "max_new_tokens", "temperature", "stop")
PROMPT_SEARCH_OPTIONS = ("trials", "dev", "objective", "folds", "pruner", "chunks", "seed", "artifact", "space")


class DevSplit(StrictModel):
    """The rows of the few-shot pool a prompt search scores its trials on (never a demo for themselves)."""

    fraction: float = Field(0.3, gt=0, lt=1, description="share of the pool held out as the dev split")
    stratify: bool | None = Field(
        None, description="keep each label's share in the dev split (default: true for classify)"
    )


class PromptSearchSettings(StrictModel):
    """A prompt search (Optuna, as the trainer's): each key beyond the options below is a candidate option
    (``fewshot.k``, ``template``, ``calibration``...) with a range ``{low, high}`` or a list of values."""

    trials: int = Field(ge=1, le=1000, description="trials to run (pruned ones included)")
    dev: DevSplit = DevSplit()
    objective: Literal["dev_accuracy", "cv_accuracy"] = Field(
        "dev_accuracy",
        description="dev_accuracy: accuracy on the dev split; cv_accuracy: mean over k folds of the pool",
    )
    folds: int = Field(3, ge=2, le=20, description="folds of the pool for cv_accuracy")
    pruner: Literal["median", "none"] = Field(
        "median", description="median: stop a trial whose dev accuracy after a chunk trails the median of earlier ones"
    )
    chunks: int = Field(
        4,
        ge=1,
        le=100,
        description="dev chunks a trial is scored in (the pruner looks after each; for a generate "
        "task after the first only, the rest decoded in one call)",
    )
    seed: int = Field(0, description="seeds the sampler (TPE) and the dev split")
    artifact: str | None = Field(
        None,
        description="where the result is written, relative to the suite (default: prompts/.search/<suite>/<candidate>.json)",
    )
    space: dict[str, SearchRange | list[Any]] = Field(description="candidate option -> range or values")

    @model_validator(mode="before")
    @classmethod
    def _collect_space(cls, value: Any) -> Any:
        return gather_space(value, PROMPT_SEARCH_OPTIONS)


class MatrixModel(ModelConfig):
    """A named model of a suite's `models:` map: a model block (as `model:` takes), and which candidates run
    on it. Each such candidate runs as `candidate@model` beside its run on the suite's own `model:`."""

    candidates: list[str] | None = Field(
        None, description="the candidates that run on this model (default: every candidate without its own model)"
    )
    markers: list[Marker] = Field(
        default_factory=list, description="pytest markers of every run on this model (`served`, `slow`)"
    )

    @field_validator("markers")
    @classmethod
    def _markers(cls, value: list[Marker]) -> list[Marker]:
        return _check_markers(value)

    def block(self) -> ModelConfig:
        """The model block alone, as a backend reads it."""
        return ModelConfig.model_validate(self.model_dump(exclude={"candidates", "markers"}))


class CompareCheck(StrictModel):
    """One pairwise check of `compare:`: `candidate` against `reference` on the rows both answered."""

    candidate: str = Field(description="the run under test (a candidate, or candidate@model)")
    reference: str = Field(description="the run it is held against")
    metric: str = Field("accuracy", description="the per-example metric compared (max_drop)")
    max_drop: float | None = Field(
        None,
        ge=0,
        le=1,
        description="non-inferiority: the one-sided (1 - alpha) lower bound of the paired difference must "
        "lie above -max_drop",
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="the non-inferiority test's level")
    min_agreement: float | None = Field(
        None, ge=0, le=1, description="the share of rows whose predictions are equal must be at least this"
    )
    min_kappa: float | None = Field(
        None, ge=-1, le=1, description="Cohen's kappa of the two predictions must be at least this"
    )

    @model_validator(mode="after")
    def _something_to_check(self) -> CompareCheck:
        if self.max_drop is None and self.min_agreement is None and self.min_kappa is None:
            raise ValueError("a check needs max_drop (non-inferiority), min_agreement or min_kappa")
        if self.candidate == self.reference:
            raise ValueError(f"'{self.candidate}' is compared with itself")
        return self


_PROMPT_KEYS = ("prompt", "template", "chat", "system", "fewshot", "calibration", "search")


class CandidateConfig(_Placed):
    prompt: str | None = Field(None, description="Jinja2 template file, relative to the suite")
    template: str | None = Field(None, description="inline Jinja2 template")
    chat: bool = Field(False, description="render the text as the user turn of the model's chat template")
    system: str | None = Field(None, description="system message when chat is true")
    fewshot: FewshotConfig | None = None
    calibration: Literal["none", "contextual"] = Field(
        "none",
        description="classify only; contextual: divide out the label prior measured on content-free inputs "
        "(N/A, empty, [MASK]) rendered through the same prompt and demos",
    )
    search: PromptSearchSettings | None = Field(
        None, description="search the prompt's options on a dev split of the few-shot pool (see PromptSearchSettings)"
    )
    adapter: str | None = Field(None, description="name of an adapter in the suite's `train:` section")
    model: ModelConfig | None = Field(
        None,
        description="the model this candidate runs on (a model block, or the name of one in `models:`); "
        "default: the suite's `model:`",
    )
    markers: list[Marker] = Field(default_factory=list, description=MARKER_HELP)

    @field_validator("markers")
    @classmethod
    def _markers(cls, value: list[Marker]) -> list[Marker]:
        return _check_markers(value)

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> CandidateConfig:
        if info.context and info.context.get("lm_eval"):
            prompting = [key for key in _PROMPT_KEYS if key in self.model_fields_set]
            if prompting:
                raise ValueError(
                    f"`{prompting[0]}:` does not apply in an `lm_eval:` suite: the task's own prompts are used "
                    "(a candidate sets `adapter:`, `model:` or `markers:`)"
                )
            return self
        _check_prompt_source(self, "a candidate")
        return self

    _suite_markers: tuple[Marker, ...] = PrivateAttr(())

    _base_name: str | None = PrivateAttr(None)
    _model_name: str | None = PrivateAttr(None)

    def placed(self, name: str, base: Path, line: int | None, suite_markers: tuple[Marker, ...]) -> CandidateConfig:
        """This candidate as the suite file names it: its name, the folder its paths are relative to, its
        line, and the suite's markers."""
        self._place(name, base, line)
        self._suite_markers = suite_markers
        return self

    def on_model(self, model_name: str, model: MatrixModel) -> CandidateConfig:
        """This candidate's run on the named model of `models:` (``candidate@model``), with its markers."""
        run = self.model_copy(update={"model": model.block(), "markers": [*self.markers, *model.markers]})
        run.placed(f"{self._name}@{model_name}", self._base, self._line, self._suite_markers)
        run._base_name, run._model_name = self._name, model_name
        return run

    @property
    def base_name(self) -> str:
        """The candidate as the suite writes it (``few_shot`` for the run ``few_shot@q4``)."""
        return self._base_name or self._name

    @property
    def model_name(self) -> str | None:
        """The name in `models:` this run is on (None: the suite's model, or the candidate's own)."""
        return self._model_name

    def with_values(self, values: dict[str, Any]) -> CandidateConfig:
        """This candidate with some options replaced (``fewshot.k`` names a few-shot setting; ``template``
        a template file), validated and placed as this one is. Task options (``max_new_tokens``...) are
        not the candidate's and are ignored here."""
        data = self.model_dump(exclude={"search"})
        for name, value in values.items():
            section, _, key = name.rpartition(".")
            if section == "fewshot" and data.get("fewshot") is not None:
                data["fewshot"][key] = value
            elif name == "template":
                data["prompt"], data["template"] = value, None
            elif name in ("calibration", "system"):
                data[name] = value
        changed = CandidateConfig.model_validate(data).placed(self._name, self._base, self._line, self._suite_markers)
        changed._base_name, changed._model_name = self._base_name, self._model_name
        return changed

    def search_artifact_path(self, suite_path: Path, suite_name: str) -> Path:
        """Where this candidate's prompt search is stored: ``search.artifact``, or
        ``prompts/.search/<suite>/<candidate>.json`` beside the suite's folder (in it when there is no
        ``prompts/`` folder next to it)."""
        if self.search is not None and self.search.artifact:
            return self._resolved(self.search.artifact)
        folder = suite_path.parent.resolve()
        root = folder.parent if (folder.parent / "prompts").is_dir() else folder
        return root / "prompts" / ".search" / suite_name / f"{self._name}.json"

    @property
    def fewshot_path(self) -> Path | None:
        return self._resolved(self.fewshot.path) if self.fewshot else None

    @property
    def fewshot_k(self) -> int:
        return self.fewshot.k if self.fewshot else 0

    @property
    def fewshot_seed(self) -> int:
        return self.fewshot.seed if self.fewshot else 0

    @property
    def all_markers(self) -> tuple[Marker, ...]:
        """The suite's markers and the candidate's own."""
        return (*self._suite_markers, *self.markers)


class SuiteConfig(StrictModel):
    suite: str
    description: str | None = None
    model: ModelConfig = ModelConfig()
    dataset: DatasetConfig
    task: TaskConfig
    candidates: dict[str, CandidateConfig] = Field(min_length=1)
    lm_eval: LmEvalSettings | None = Field(
        None,
        description="run an lm-evaluation-harness task unchanged (its data, prompts and metrics) instead of "
        "`dataset:`, `task:` and prompt candidates",
    )
    models: dict[str, MatrixModel] = Field(
        default_factory=dict,
        description="named models: each runs the candidates it lists (all, by default) as candidate@model",
    )
    compare: list[CompareCheck] = Field(
        default_factory=list, description="pairwise checks between runs: non-inferiority and agreement gates"
    )
    train: dict[str, TrainConfig] = Field(default_factory=dict)
    written_thresholds: dict[str, Any] = Field(
        default_factory=dict,
        alias="thresholds",
        description="metric: comparison for every candidate, or candidate: {metric: comparison}",
    )
    baseline: BaselineConfig = BaselineConfig()
    max_reads: MaxReads | None = Field(None, description=MAX_READS_HELP)
    robustness: RobustnessConfig | None = None
    retention: RetentionSettings | None = Field(
        None, description="standard suites every adapter of this suite is checked on for what it forgot"
    )
    markers: list[Marker] = Field(default_factory=list, description=MARKER_HELP)

    @field_validator("markers")
    @classmethod
    def _markers(cls, value: list[Marker]) -> list[Marker]:
        return _check_markers(value)

    def retention_of(self, adapter: str) -> RetentionSettings | None:
        """The retention check adapter ``adapter`` gets: its `train:` entry's, else the suite's."""
        own = self.train[adapter].retention if adapter in self.train else None
        return own or self.retention

    @model_validator(mode="before")
    @classmethod
    def _lm_eval_suite(cls, data: Any) -> Any:
        """An `lm_eval:` suite reads its rows and prompts from the task: its `dataset:` and `task:` are the
        task's, and its one candidate by default is the base model."""
        if not isinstance(data, dict) or not isinstance(data.get("lm_eval"), dict):
            return data
        for key in ("dataset", "task"):
            if key in data:
                raise ValueError(
                    f"an `lm_eval:` suite reads its {key} from the lm-eval task: drop `{key}:` "
                    "(local data: `lm_eval: {data_files: ...}`)"
                )
        settings = data["lm_eval"]
        return {
            **data,
            "dataset": {"path": f"lm_eval:{settings.get('task', '')}", "limit": settings.get("limit")},
            "task": {"kind": "lm_eval"},
            "candidates": data.get("candidates") or {"base": {}},
        }

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("max_reads", mode="before")
    @classmethod
    def _max_reads_shorthand(cls, value: Any) -> Any:
        if value is None or isinstance(value, dict):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(
                f"write a whole number (max_reads: 40) or a mapping (max_reads: {{limit: 40, strict: true}}), "
                f"not {str(value).lower() if isinstance(value, bool) else repr(value)}"
            )
        if value < 1:
            raise ValueError(f"must be a whole number of at least 1, not {value}")
        return {"limit": value}

    @field_validator("suite")
    @classmethod
    def _suite_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("suite names use letters, digits, '_', '-' and '.' and start with a letter or digit")
        return value

    # --------------------------------------------------------------------------- resolved spec

    _path: Path = PrivateAttr(Path("."))
    _lines: dict[str, int | None] = PrivateAttr(default_factory=dict)
    _thresholds: dict[str, dict[str, Threshold]] = PrivateAttr(default_factory=dict)
    _scorer: Any = PrivateAttr(None)
    _metric_names: tuple[str, ...] = PrivateAttr(())

    def resolved(
        self,
        path: Path,
        *,
        lines: dict[str, int | None],
        thresholds: dict[str, dict[str, Threshold]],
        scorer: Any,
        metric_names: tuple[str, ...],
    ) -> SuiteConfig:
        """Attach what reading the file found out: where it is (paths resolve against its folder), the lines
        of `suite:` and `model:`, every candidate's parsed thresholds, the task's scorer and metrics."""
        self._path, self._lines, self._thresholds = path.resolve(), lines, thresholds
        self._scorer, self._metric_names = scorer, metric_names
        return self

    @property
    def name(self) -> str:
        return self.suite

    @property
    def path(self) -> Path:
        """The suite file."""
        return self._path

    @property
    def dataset_path(self) -> Path:
        return (self._path.parent / self.dataset.path).resolve()

    @property
    def dataset_limit(self) -> int | None:
        return self.dataset.limit

    @property
    def id_field(self) -> str:
        return self.dataset.id_field

    @property
    def model_line(self) -> int:
        """Where `model:` is written, for errors about the model."""
        return self._lines.get("model") or 1

    @property
    def name_line(self) -> int:
        """Where `suite:` is written."""
        return self._lines.get("suite") or 1

    @property
    def metric_names(self) -> tuple[str, ...]:
        """What the suite reports: its task kind's metrics (and invariance with `robustness:`)."""
        return self._metric_names

    def scorer(self) -> Any:
        """The task's scorer (for kinds that use one), as built and checked when the suite was loaded."""
        return self._scorer

    def robustness_for(self, candidate: str) -> RobustnessConfig | None:
        """The robustness section if it applies to ``candidate``."""
        r = self.robustness
        return r if r is not None and (r.candidates is None or candidate in r.candidates) else None

    @property
    def thresholds(self) -> dict[str, dict[str, Threshold]]:
        """Every candidate's thresholds, parsed: the shared ones with its own on top."""
        return self._thresholds

    def thresholds_for(self, candidate: str) -> dict[str, Threshold]:
        return self._thresholds.get(candidate, {})

    def model_for(self, candidate: str) -> ModelConfig:
        """The model ``candidate`` runs on: its own (a run of `models:` included), else the suite's."""
        return self.candidates[candidate].model or self.model

    def model_line_of(self, candidate: str) -> int:
        """Where the model ``candidate`` runs on is written, for errors about that model."""
        run = self.candidates[candidate]
        if run.model is None:
            return self.model_line
        if run.model_name is not None:
            return self._lines.get(f"models.{run.model_name}") or self.model_line
        return self._lines.get(f"candidates.{candidate}.model") or run.line or self.model_line

    def lm_eval_line(self, key: str = "task") -> int | None:
        """Where a key of the `lm_eval:` section is written (the section's line when the key is not)."""
        return self._lines.get(f"lm_eval.{key}") or self._lines.get("lm_eval")

    def compare_line(self, index: int) -> int | None:
        """Where the ``index``-th `compare:` check is written."""
        return self._lines.get(f"compare.{index}")

    def checks_of(self, candidate: str) -> list[CompareCheck]:
        """The `compare:` checks that hold ``candidate`` against a reference."""
        return [c for c in self.compare if c.candidate == candidate]


# The names the rest of evalkit reads a suite by: the validated tree itself, placed in its file.
SuiteSpec = SuiteConfig
Candidate = CandidateConfig
TrainSpec = TrainConfig

"""The suite file (``*.eval.yaml``): schema, path resolution and validation with file:line errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalkit.errors import ScorerError, SuiteError, ThresholdError, did_you_mean, did_you_mean_path, shown_path
from evalkit.gate import Threshold, parse_threshold
from evalkit.scoring import build_scorer, scorer_needs_target

DEFAULT_MODEL = "smollm2-135m-instruct"
CLASSIFY_METRICS = ("accuracy", "acc_norm", "macro_f1")
GENERATE_METRICS = ("accuracy", "score")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------- YAML with line numbers


class _LineMap(dict):
    """A mapping that remembers the line of each key (1-based)."""

    line: int = 0
    key_lines: dict


class _LineLoader(yaml.SafeLoader):
    """PyYAML's safe loader, recording line numbers and refusing duplicate keys."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineMap:
    loader.flatten_mapping(node)
    mapping = _LineMap()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise SuiteError(f"a mapping key must be a plain word, not {key!r}", line=line)
        if key in mapping:
            raise SuiteError(
                f"duplicate key '{key}' (first defined on line {mapping.key_lines[key]})",
                line=line,
                fix="give every key a distinct name; YAML keeps only the last of duplicates",
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = line
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file safely, with SuiteError (file:line) on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"cannot read suite file: {exc.strerror}", path=path) from None
    except UnicodeDecodeError:
        raise SuiteError("suite file is not UTF-8 text", path=path, fix="save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except SuiteError as exc:
        exc.path = str(path)
        raise SuiteError(exc.message, path=path, line=exc.line, fix=exc.fix) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and mark and exc.context_mark.line != mark.line:
            problem += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise SuiteError(f"YAML syntax error: {problem}", path=path, line=line,
                         fix="check indentation and quoting on this line") from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"YAML error: {exc}", path=path) from None


def _line_of(document: Any, loc: tuple) -> int | None:
    """Deepest line known for the location ``loc`` (a tuple of keys and indexes)."""
    line = getattr(document, "line", None)
    node = document
    for part in loc:
        if isinstance(node, _LineMap) and part in node:
            line = node.key_lines.get(part, line)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            line = getattr(node, "line", line)
        else:
            break
    return line


# --------------------------------------------------------------------------- schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """Which model to evaluate: an alias of the embedded default, a local folder, or a hub id."""

    name: str = Field(DEFAULT_MODEL, description="alias, local Hugging Face folder, or cached hub id")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="weights dtype; auto: bfloat16 where the hardware computes it natively, else float32")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs; auto: a GPU when there is one")
    trust_remote_code: bool = Field(False, description="allow a model's own Python code to run")
    allow_pickle: bool = Field(False, description="load pickle weights (*.bin, *.pt), which can run code when "
                               "loaded; for checkpoints you trust that have no *.safetensors")
    batch_size: int | None = Field(None, ge=1, description="rows per forward pass (default: automatic)")


class DatasetConfig(_Strict):
    path: str = Field(description="JSONL/JSON/CSV/Parquet file or a saved `datasets` folder, relative to the suite")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N rows")
    id_field: str = Field("id", description="row field with a stable example id (else a hash of the row)")


class FewshotConfig(_Strict):
    path: str = Field(description="rows to draw examples from, relative to the suite")
    k: int = Field(4, ge=0, description="number of examples")
    seed: int = Field(0, description="seed for the draw")


class ScorerConfig(_Strict):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str


class TaskConfig(_Strict):
    kind: Literal["classify", "generate"]
    target: str | None = Field(None, description="row field holding the gold answer")
    choices: list[str] | None = Field(None, min_length=2)
    choices_field: str | None = None
    choice_prefix: str = " "
    max_new_tokens: int = Field(32, ge=1, le=4096)
    stop: list[str] = Field(default_factory=lambda: ["\n"])
    scorer: ScorerConfig = ScorerConfig(name="exact_match")
    temperature: float = Field(0.0, ge=0, le=10, description="0: greedy decoding; above 0: sampled generation")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: keep the smallest set of tokens with this mass")
    repeats: int = Field(1, ge=1, le=100, description="samples per example with temperature > 0; the gate uses the mean")
    seed: int = Field(0, description="seeds sampled generation (each example and repeat draws its own stream)")

    @field_validator("scorer", mode="before")
    @classmethod
    def _scorer_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_kind(self) -> "TaskConfig":
        if self.kind == "classify":
            if self.target is None:
                raise ValueError("a classify task needs `target:` (the row field with the gold choice)")
            if (self.choices is None) == (self.choices_field is None):
                raise ValueError("a classify task needs exactly one of `choices:` or `choices_field:`")
            if self.choices is not None and len(set(self.choices)) != len(self.choices):
                raise ValueError("`choices` contains duplicates")
            if self.temperature > 0 or self.repeats > 1:
                raise ValueError("a classify task scores every choice's log-likelihood; `temperature` and `repeats` "
                                 "apply to generate tasks only")
        elif self.repeats > 1 and self.temperature == 0:
            raise ValueError("`repeats` needs sampled generation: greedy decoding (temperature 0) gives the same "
                             "output every time; set `temperature:` above 0 or remove `repeats:`")
        return self

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


class LoraSettings(_Strict):
    """The LoRA adapter's shape (peft ``LoraConfig``)."""

    r: int = Field(8, ge=1, le=1024, description="rank of the update matrices")
    alpha: float = Field(16, gt=0, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1,
                                      description="names of the linear layers that get an adapter")


class ValidationSettings(_Strict):
    """Held-out training rows: early stopping, best checkpoint, optional k-fold cross-validation."""

    fraction: float = Field(0.1, ge=0, lt=1, description="share of training rows held out for validation")
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without improvement before stopping")
    folds: int | None = Field(None, ge=2, le=20, description="also run k-fold cross-validation and report its spread")


class TrainConfig(_Strict):
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

    @model_validator(mode="after")
    def _one_source(self) -> "TrainConfig":
        _check_prompt_source(self, "a training set")
        return self

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that shapes the adapter's weights (not where it is written, nor the contamination gate)."""
        return self.model_dump(exclude={"output", "data", "prompt", "template", "allow_contamination"})


class RobustnessConfig(_Strict):
    """Perturbation tests (`robustness:` in a suite): does each candidate keep its answers?"""

    perturbations: list[str] = Field(min_length=1, description="names: case, whitespace, typos, punctuation, "
                                                                 "distractor, choice_order, or registered ones")
    examples: int = Field(40, ge=1, description="rows drawn (seeded) from the golden set")
    tries: int = Field(10, ge=1, le=1000, description="perturbations tried per row")
    seed: int = Field(0, description="seeds the row draw and every row's search")
    fields: list[str] | None = Field(None, min_length=1, description="row fields to perturb (default: every text "
                                                                     "field but the id, target and choices)")
    shrink_calls: int = Field(64, ge=0, le=10000, description="model calls per flipped row spent shrinking its change")
    candidates: list[str] | None = Field(None, min_length=1, description="candidates to test (default: all)")


class BaselineConfig(_Strict):
    """When a change against the committed baseline fails a candidate (`baseline:` in a suite)."""

    metric: Literal["accuracy", "acc_norm", "score", "invariance"] = Field(
        "accuracy", description="the metric gated against the baseline (a mean of one value per example)")
    max_drop: float = Field(0.0, ge=0, le=1, description="largest drop of the metric that is never a regression")
    alpha: float = Field(0.05, gt=0, lt=1, description="a drop fails only when the paired McNemar test gives p < alpha")
    strict: bool = Field(False, description="fail on any drop, significant or not")


class CandidateConfig(_Strict):
    prompt: str | None = Field(None, description="Jinja2 template file, relative to the suite")
    template: str | None = Field(None, description="inline Jinja2 template")
    chat: bool = Field(False, description="render the text as the user turn of the model's chat template")
    system: str | None = Field(None, description="system message when chat is true")
    fewshot: FewshotConfig | None = None
    adapter: str | None = Field(None, description="name of an adapter in the suite's `train:` section")
    markers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> "CandidateConfig":
        _check_prompt_source(self, "a candidate")
        return self


class SuiteConfig(_Strict):
    suite: str
    description: str | None = None
    model: ModelConfig = ModelConfig()
    dataset: DatasetConfig
    task: TaskConfig
    candidates: dict[str, CandidateConfig] = Field(min_length=1)
    train: dict[str, TrainConfig] = Field(default_factory=dict)
    thresholds: dict[str, Any] = Field(default_factory=dict)
    baseline: BaselineConfig = BaselineConfig()
    robustness: RobustnessConfig | None = None
    markers: list[str] = Field(default_factory=list)

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("suite")
    @classmethod
    def _suite_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("suite names use letters, digits, '_', '-' and '.' and start with a letter or digit")
        return value


# --------------------------------------------------------------------------- resolved spec


@dataclass(frozen=True)
class Candidate:
    name: str
    prompt_path: Path | None
    template: str | None
    chat: bool
    system: str | None
    fewshot_path: Path | None
    fewshot_k: int
    fewshot_seed: int
    markers: tuple[str, ...]
    line: int | None
    adapter: str | None = None


@dataclass(frozen=True)
class TrainSpec:
    """One `train:` entry with its paths resolved."""

    name: str
    output: Path
    data_path: Path
    prompt_path: Path | None
    template: str | None
    config: TrainConfig
    line: int | None

    def as_candidate(self) -> Candidate:
        """The training prompt as a candidate, so rows render exactly as a candidate renders them."""
        return Candidate(
            name=self.name, prompt_path=self.prompt_path, template=self.template, chat=self.config.chat,
            system=self.config.system, fewshot_path=None, fewshot_k=0, fewshot_seed=0, markers=(), line=self.line,
        )


@dataclass(frozen=True)
class SuiteSpec:
    """A validated suite with every path resolved against the suite file's folder."""

    name: str
    path: Path
    description: str | None
    model: ModelConfig
    dataset_path: Path
    dataset_limit: int | None
    id_field: str
    task: TaskConfig
    candidates: dict[str, Candidate]
    thresholds: dict[str, dict[str, Threshold]]
    markers: tuple[str, ...]
    train: dict[str, TrainSpec] = field(default_factory=dict)
    baseline: BaselineConfig = BaselineConfig()
    robustness: RobustnessConfig | None = None
    model_line: int | None = None  # where `model:` is written, for errors about the model
    name_line: int | None = None  # where `suite:` is written

    def robustness_for(self, candidate: str) -> RobustnessConfig | None:
        """The robustness section if it applies to ``candidate``."""
        r = self.robustness
        return r if r is not None and (r.candidates is None or candidate in r.candidates) else None

    @property
    def metric_names(self) -> tuple[str, ...]:
        names = CLASSIFY_METRICS if self.task.kind == "classify" else GENERATE_METRICS
        return (*names, "invariance") if self.robustness is not None else names

    def thresholds_for(self, candidate: str) -> dict[str, Threshold]:
        return self.thresholds.get(candidate, {})


def _format_validation_error(exc: ValidationError, document: Any, path: Path) -> SuiteError:
    # A misspelt key usually causes the other errors (a required key then looks missing): report it first.
    priority = {"extra_forbidden": 0, "missing": 1}
    error = min(exc.errors(), key=lambda e: priority.get(e["type"], 2))
    clean = tuple(error["loc"])
    where = ".".join(str(p) for p in clean) or "suite"
    line = _line_of(document, clean)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(clean[:-1])
        key = clean[-1]
        return SuiteError(f"unknown key '{key}'{did_you_mean(key, allowed)}", path=path, line=line,
                          fix=f"allowed keys here: {', '.join(allowed)}" if allowed else None)
    if kind == "missing":
        return SuiteError(f"missing required key '{where}'", path=path, line=line,
                          fix=f"add `{clean[-1]}:` ({_describe(clean)})")
    message = error["msg"].removeprefix("Value error, ")
    meaning = _describe(clean) if clean and isinstance(clean[-1], str) else "required"
    return SuiteError(f"{where}: {message}", path=path, line=line,
                      fix=f"`{clean[-1]}:` means: {meaning}" if meaning != "required" else None)


_SECTION_MODELS: dict[tuple, type[BaseModel]] = {
    (): SuiteConfig,
    ("model",): ModelConfig,
    ("dataset",): DatasetConfig,
    ("task",): TaskConfig,
    ("baseline",): BaselineConfig,
    ("robustness",): RobustnessConfig,
}


def _section_model(loc: tuple) -> type[BaseModel] | None:
    """The schema model that validates the mapping at ``loc``."""
    if loc in _SECTION_MODELS:
        return _SECTION_MODELS[loc]
    if len(loc) == 2 and loc[0] == "candidates":
        return CandidateConfig
    if len(loc) == 3 and loc[0] == "candidates" and loc[2] == "fewshot":
        return FewshotConfig
    if len(loc) == 2 and loc[0] == "train":
        return TrainConfig
    if len(loc) == 3 and loc[0] == "train" and loc[2] == "lora":
        return LoraSettings
    if len(loc) == 3 and loc[0] == "train" and loc[2] == "validation":
        return ValidationSettings
    return None


def _allowed_keys(loc: tuple) -> list[str]:
    model = _section_model(loc)
    return list(model.model_fields) if model is not None else []


def _describe(loc: tuple) -> str:
    model = _section_model(loc[:-1])
    if model is not None and loc[-1] in model.model_fields:
        return model.model_fields[loc[-1]].description or "required"
    return "required"


def load_suite(path: str | Path) -> SuiteSpec:
    """Read and validate a suite file; every problem raises SuiteError naming the file and line."""
    path = Path(path)
    document = load_yaml(path)
    if not isinstance(document, dict):
        raise SuiteError(
            "a suite file must be a YAML mapping with `suite:`, `dataset:`, `task:` and `candidates:`",
            path=path, line=1,
        )
    try:
        config = SuiteConfig.model_validate(dict(document))
    except ValidationError as exc:
        raise _format_validation_error(exc, document, path) from None
    base = path.parent

    def line(*loc: Any) -> int | None:
        return _line_of(document, loc)

    def existing(relative: str, *loc: Any, what: str) -> Path:
        resolved = (base / relative).resolve()
        if not resolved.exists():
            raise SuiteError(
                f"{what} '{relative}' does not exist{did_you_mean_path(resolved, relative)}",
                path=path, line=line(*loc),
                fix=f"paths in a suite are relative to the suite file's folder: this one points at {shown_path(resolved)}",
            )
        return resolved

    model = config.model
    dataset_path = existing(config.dataset.path, "dataset", "path", what="dataset")

    task = config.task
    scorer_name = task.scorer_name
    if task.kind == "generate":
        try:  # unknown scorers and options are reported here, at collection, not mid-run
            build_scorer(scorer_name, task.scorer_options, base_dir=base)
        except ScorerError as exc:
            raise SuiteError(exc.message, path=path, line=line("task", "scorer"), fix=exc.fix) from None
        if task.target is None and scorer_needs_target(scorer_name):
            raise SuiteError(
                f"scorer '{scorer_name}' compares with a target, but the task has no `target:`",
                path=path, line=line("task"), fix="add `target: <row field with the expected answer>`",
            )

    train: dict[str, TrainSpec] = {}
    for name, tc in config.train.items():
        if not _NAME.match(str(name)):
            raise SuiteError(
                f"adapter name '{name}' is not a usable name", path=path, line=line("train", name),
                fix="use letters, digits, '_', '-' and '.', starting with a letter or digit",
            )
        train[name] = TrainSpec(
            name=name,
            output=(base / tc.output).resolve(),
            data_path=existing(tc.data, "train", name, "data", what="training data"),
            prompt_path=existing(tc.prompt, "train", name, "prompt", what="prompt template") if tc.prompt else None,
            template=tc.template,
            config=tc,
            line=line("train", name),
        )
    outputs: dict[Path, str] = {}
    for name, ts in train.items():
        if ts.output in outputs:
            raise SuiteError(f"adapters '{outputs[ts.output]}' and '{name}' are both written to {ts.output}",
                             path=path, line=line("train", name, "output"), fix="give every adapter its own `output:` folder")
        outputs[ts.output] = name

    candidates: dict[str, Candidate] = {}
    for name, cand in config.candidates.items():
        if not _NAME.match(str(name)):
            raise SuiteError(
                f"candidate name '{name}' is not usable as a pytest id",
                path=path, line=line("candidates", name),
                fix="use letters, digits, '_', '-' and '.', starting with a letter or digit",
            )
        prompt_path = existing(cand.prompt, "candidates", name, "prompt", what="prompt template") if cand.prompt else None
        fewshot_path = None
        if cand.fewshot is not None:
            fewshot_path = existing(cand.fewshot.path, "candidates", name, "fewshot", "path", what="few-shot dataset")
        candidates[name] = Candidate(
            name=name,
            prompt_path=prompt_path,
            template=cand.template,
            chat=cand.chat,
            system=cand.system,
            fewshot_path=fewshot_path,
            fewshot_k=cand.fewshot.k if cand.fewshot else 0,
            fewshot_seed=cand.fewshot.seed if cand.fewshot else 0,
            markers=tuple(config.markers) + tuple(cand.markers),
            line=line("candidates", name),
            adapter=cand.adapter,
        )
        if cand.adapter is not None and cand.adapter not in train:
            known = f"adapters in `train:` are: {', '.join(train)}" if train else "add a `train:` section that defines it"
            raise SuiteError(
                f"candidate '{name}' uses adapter '{cand.adapter}', which the suite does not define{did_you_mean(cand.adapter, train)}",
                path=path, line=line("candidates", name, "adapter"), fix=known,
            )

    metric_names = CLASSIFY_METRICS if task.kind == "classify" else GENERATE_METRICS
    for name in (config.robustness.candidates or []) if config.robustness is not None else []:
        if name not in candidates:
            raise SuiteError(f"robustness names candidate '{name}', which the suite does not define"
                             f"{did_you_mean(name, candidates)}", path=path, line=line("robustness", "candidates"),
                             fix=f"candidates are: {', '.join(candidates)}")
    if config.robustness is not None:
        from evalkit.robustness import check_perturbations

        try:
            check_perturbations(config.robustness.perturbations, task.kind)
        except ValueError as exc:
            raise SuiteError(str(exc), path=path, line=line("robustness", "perturbations"),
                             fix="list perturbations by name; the README's robustness section describes each") from None
        metric_names = (*metric_names, "invariance")
    if config.baseline.metric not in metric_names:
        raise SuiteError(
            f"baseline metric '{config.baseline.metric}' is not reported by a {task.kind} task",
            path=path, line=line("baseline", "metric"),
            fix=f"use one of: {', '.join(m for m in metric_names if m != 'macro_f1')}",
        )
    shared: dict[str, Threshold] = {}
    overrides: dict[str, dict[str, Threshold]] = {}

    def parse(metric: str, expression: Any, *loc: Any) -> Threshold:
        if metric not in metric_names:
            needs_section = metric == "invariance"
            raise SuiteError(
                "metric 'invariance' needs a `robustness:` section" if needs_section
                else f"unknown metric '{metric}' in thresholds{did_you_mean(metric, metric_names)}",
                path=path, line=line(*loc),
                fix="add `robustness: {perturbations: [case, typos]}`" if needs_section
                else f"a {task.kind} task reports: {', '.join(metric_names)}",
            )
        try:
            return parse_threshold(metric, expression)
        except ThresholdError as exc:
            raise SuiteError(exc.message, path=path, line=line(*loc), fix=exc.fix) from None

    for key, value in config.thresholds.items():
        if isinstance(value, dict):
            if key not in candidates:
                raise SuiteError(
                    f"thresholds for '{key}', which is not a candidate{did_you_mean(key, candidates)}",
                    path=path, line=line("thresholds", key),
                    fix=f"candidates are: {', '.join(candidates)}",
                )
            overrides[key] = {m: parse(m, e, "thresholds", key, m) for m, e in value.items()}
        else:
            if key in candidates:
                raise SuiteError(
                    f"thresholds for candidate '{key}' must be a mapping of metric to comparison",
                    path=path, line=line("thresholds", key), fix=f"write `{key}: {{accuracy: \">= 0.5\"}}`",
                )
            shared[key] = parse(key, value, "thresholds", key)
    robust = config.robustness
    tested = set(candidates) if robust is None or robust.candidates is None else set(robust.candidates)
    for name, own in overrides.items():
        if "invariance" in own and name not in tested:
            raise SuiteError(f"threshold on invariance for '{name}', which `robustness.candidates` leaves out",
                             path=path, line=line("thresholds", name, "invariance"),
                             fix=f"add '{name}' to `robustness.candidates`, or drop the threshold")
    thresholds = {name: {m: t for m, t in {**shared, **overrides.get(name, {})}.items()
                         if m != "invariance" or name in tested}  # a shared invariance threshold: tested only
                  for name in candidates}

    return SuiteSpec(
        name=config.suite,
        path=path.resolve(),
        description=config.description,
        model=model,
        dataset_path=dataset_path,
        dataset_limit=config.dataset.limit,
        id_field=config.dataset.id_field,
        task=task,
        candidates=candidates,
        thresholds=thresholds,
        markers=tuple(config.markers),
        train=train,
        baseline=config.baseline,
        robustness=config.robustness,
        model_line=line("model") or 1,
        name_line=line("suite") or 1,
    )

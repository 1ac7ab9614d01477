"""Reading a suite file (``*.eval.yaml``): YAML with line numbers, the schema of :mod:`evalkit.spec`, paths
resolved and checked, the task kind's own checks, thresholds parsed; every mistake a SuiteError naming
the file, the line and the fix.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from evalkit.backends import backend_class, backend_names
from evalkit.backends.base import BACKENDS
from evalkit.data import printable_path, refused_path
from evalkit.errors import (
    EvalkitError,
    ModelError,
    SuiteError,
    ThresholdError,
    did_you_mean,
    did_you_mean_path,
    shown_path,
)
from evalkit.gate import Threshold, parse_threshold
from evalkit.harness.settings import METRIC_NAME, LmEvalSettings
from evalkit.matrix import LATENCY_METRICS, check_compare, check_latency_thresholds, expand_runs, served
from evalkit.spec import (
    DEFAULT_MODEL,
    NAME,
    PROMPT_SEARCH_OPTIONS,
    PROMPT_SEARCHABLE,
    PROMPT_SEARCHABLE_GENERATE,
    BaselineConfig,
    Candidate,
    CandidateConfig,
    CompareCheck,
    DatasetConfig,
    DevSplit,
    FewshotConfig,
    LoraSettings,
    MatrixModel,
    MaxReads,
    ModelConfig,
    PromptSearchSettings,
    RobustnessConfig,
    SuiteConfig,
    SuiteSpec,
    TaskConfig,
    TrainConfig,
    TrainSpec,
    ValidationSettings,
)
from evalkit.tasks import TASK_KINDS, ModelGradedScorer, TaskProblem, task_kind

__all__ = ["DEFAULT_MODEL", "Candidate", "ModelConfig", "SuiteSpec", "TrainSpec", "load_suite", "load_yaml"]


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
        return yaml.load(text, Loader=_LineLoader)
    except SuiteError as exc:
        exc.path = str(path)
        raise SuiteError(exc.message, path=path, line=exc.line, fix=exc.fix) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and mark and exc.context_mark.line != mark.line:
            problem += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise SuiteError(
            f"YAML syntax error: {problem}", path=path, line=line, fix="check indentation and quoting on this line"
        ) from None
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


def _format_validation_error(exc: ValidationError, document: Any, path: Path) -> SuiteError:
    # A misspelt key usually causes the other errors (a required key then looks missing): report it first.
    priority = {"extra_forbidden": 0, "missing": 1}
    error = min(exc.errors(), key=lambda e: priority.get(e["type"], 2))
    clean = tuple(error["loc"])
    if clean[:1] == ("candidates",) and clean[2:4] == ("search", "space"):  # searched options sit beside the rest
        clean = tuple(p for p in (*clean[:3], *clean[4:]) if not str(p).startswith("function-"))
    where = ".".join(str(p) for p in clean) or "suite"
    line = _line_of(document, clean)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(clean[:-1])
        key = str(clean[-1])
        return SuiteError(
            f"unknown key '{key}'{did_you_mean(key, allowed)}",
            path=path,
            line=line,
            fix=f"allowed keys here: {', '.join(allowed)}" if allowed else None,
        )
    if kind == "missing":
        return SuiteError(
            f"missing required key '{where}'", path=path, line=line, fix=f"add `{clean[-1]}:` ({_describe(clean)})"
        )
    message = error["msg"].removeprefix("Value error, ")
    meaning = _describe(clean) if clean and isinstance(clean[-1], str) else "required"
    return SuiteError(
        f"{where}: {message}",
        path=path,
        line=line,
        fix=f"`{clean[-1]}:` means: {meaning}" if meaning != "required" else None,
    )


_SECTION_MODELS: dict[tuple, type[BaseModel]] = {
    (): SuiteConfig,
    ("model",): ModelConfig,
    ("dataset",): DatasetConfig,
    ("task",): TaskConfig,
    ("baseline",): BaselineConfig,
    ("max_reads",): MaxReads,
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
    if len(loc) == 3 and loc[0] == "candidates" and loc[2] == "search":
        return PromptSearchSettings
    if len(loc) == 4 and loc[0] == "candidates" and loc[2] == "search" and loc[3] == "dev":
        return DevSplit
    if len(loc) == 2 and loc[0] == "models":
        return MatrixModel
    if len(loc) == 3 and loc[0] == "candidates" and loc[2] == "model":
        return ModelConfig
    if len(loc) == 2 and loc[0] == "compare":
        return CompareCheck
    if len(loc) == 2 and loc[0] == "train":
        return TrainConfig
    if len(loc) == 3 and loc[0] == "train" and loc[2] == "lora":
        return LoraSettings
    if len(loc) == 3 and loc[0] == "train" and loc[2] == "validation":
        return ValidationSettings
    return None


def _allowed_keys(loc: tuple) -> list[str]:
    model = _section_model(loc)
    return [field.alias or name for name, field in model.model_fields.items()] if model is not None else []


def _describe(loc: tuple) -> str:
    model = _section_model(loc[:-1])
    fields = {field.alias or name: field for name, field in model.model_fields.items()} if model is not None else {}
    if loc[-1] in fields:
        return fields[loc[-1]].description or "required"
    return "required"


class _Reader:
    """One suite file being turned into a SuiteSpec: its parsed document, for lines, and its folder."""

    def __init__(self, path: Path, document: Any) -> None:
        self.path, self.document, self.base = path, document, path.parent

    def line(self, *loc: Any) -> int | None:
        return _line_of(self.document, loc)

    def error(self, message: str, *loc: Any, fix: str | None = None) -> SuiteError:
        return SuiteError(message, path=self.path, line=self.line(*loc), fix=fix)

    def usable_path(self, relative: str, *loc: Any, what: str) -> None:
        """A SuiteError at ``loc`` when the operating system refuses the path outright (a NUL byte, a name
        or a path too long for the file system)."""
        refused = refused_path(self.base / relative)
        if refused is not None:
            problem, fix = refused
            raise self.error(f"{what} '{printable_path(relative)}' {problem}", *loc, fix=fix)

    def existing(self, relative: str, *loc: Any, what: str) -> Path:
        self.usable_path(relative, *loc, what=what)
        resolved = (self.base / relative).resolve()
        if not resolved.exists():
            raise self.error(
                f"{what} '{relative}' does not exist{did_you_mean_path(resolved, relative)}",
                *loc,
                fix=f"paths in a suite are relative to the suite file's folder: this one points at {shown_path(resolved)}",
            )
        return resolved

    def usable_name(self, name: Any, what: str, *loc: Any, fix_what: str) -> None:
        if not NAME.match(str(name)):
            raise self.error(
                f"{what} name '{name}' is {fix_what}",
                *loc,
                fix="use letters, digits, '_', '-' and '.', starting with a letter or digit",
            )


def _scorer(reader: _Reader, task: TaskConfig, candidates: Sequence[str]) -> Any:
    """The task kind's suite checks (unknown scorers and options are reported here, at collection); a
    model-graded scorer's judge models are checked like the suite's own `model:`."""
    try:
        scorer = task_kind(task.kind).check_suite(task, reader.base)
    except TaskProblem as exc:
        raise reader.error(exc.message, *exc.where, fix=exc.fix) from None
    # Asked of the scorer, not of its class: a judge built from the entry point's module and one imported
    # here may come from two imports of evalkit.judge (pytest's in-process runs re-import modules).
    if isinstance(scorer, ModelGradedScorer) or hasattr(scorer, "grade"):
        graded: Any = scorer
        for loc, model in graded.model_blocks():
            _check_backend(reader, model, "task", "scorer", *loc)
        try:
            graded.check_candidates(candidates)
        except ValueError as exc:
            raise reader.error(str(exc), "task", "scorer", "against") from None
        graded.place(reader.path, reader.line)
    return scorer


def _train_specs(reader: _Reader, config: SuiteConfig) -> dict[str, TrainSpec]:
    outputs: dict[Path, str] = {}
    for name, tc in config.train.items():
        reader.usable_name(name, "adapter", "train", name, fix_what="not a usable name")
        tc.placed(name, reader.base, reader.line("train", name))
        reader.existing(tc.data, "train", name, "data", what="training data")
        if tc.prompt:
            reader.existing(tc.prompt, "train", name, "prompt", what="prompt template")
        reader.usable_path(tc.output, "train", name, "output", what="adapter folder")
        if tc.output_path in outputs:
            raise reader.error(
                f"adapters '{outputs[tc.output_path]}' and '{name}' are both written to {tc.output_path}",
                "train",
                name,
                "output",
                fix="give every adapter its own `output:` folder",
            )
        outputs[tc.output_path] = name
    return config.train


def _candidates(reader: _Reader, config: SuiteConfig, train: dict[str, TrainSpec]) -> dict[str, Candidate]:
    for name, cand in config.candidates.items():
        reader.usable_name(name, "candidate", "candidates", name, fix_what="not usable as a pytest id")
        if cand.prompt:
            reader.existing(cand.prompt, "candidates", name, "prompt", what="prompt template")
        if cand.fewshot is not None:
            reader.existing(cand.fewshot.path, "candidates", name, "fewshot", "path", what="few-shot dataset")
        cand.placed(name, reader.base, reader.line("candidates", name), tuple(config.markers))
        _check_prompt_options(reader, config, name, cand)
        if cand.adapter is not None and cand.adapter not in train:
            known = (
                f"adapters in `train:` are: {', '.join(train)}" if train else "add a `train:` section that defines it"
            )
            raise reader.error(
                f"candidate '{name}' uses adapter '{cand.adapter}', which the suite does not define"
                f"{did_you_mean(cand.adapter, train)}",
                "candidates",
                name,
                "adapter",
                fix=known,
            )
    return config.candidates


def _check_prompt_options(reader: _Reader, config: SuiteConfig, name: str, cand: Candidate) -> None:
    """A candidate's few-shot and calibration options fit the task; its `search:` block names only options
    the task has, and every value it lists (or both ends of a range) is one that option accepts."""
    classify = task_kind(config.task.kind).offers_choices
    at = ("candidates", name)
    if cand.calibration != "none" and not classify:
        raise reader.error(
            f"calibration: {cand.calibration} divides out a label prior, and a {config.task.kind} task has no labels",
            *at,
            "calibration",
            fix="use calibration with a classify task, or remove it",
        )
    if cand.fewshot is not None and cand.fewshot.select == "stratified" and not classify:
        raise reader.error(
            f"fewshot.select: stratified draws evenly across labels, and a {config.task.kind} task has none",
            *at,
            "fewshot",
            "select",
            fix="use `select: random` or `select: nearest`",
        )
    search = cand.search
    if search is None:
        return
    if cand.fewshot is None:
        raise reader.error(
            f"candidate '{name}' has a `search:` but no few-shot pool to search on",
            *at,
            "search",
            fix="add `fewshot: {path: <rows like the golden ones, none of them golden>}`: the dev split is drawn "
            "from it, so the golden rows stay unread",
        )
    if search.dev.stratify and not classify:
        raise reader.error(
            f"search.dev.stratify keeps each label's share, and a {config.task.kind} task has no labels",
            *at,
            "search",
            "dev",
            "stratify",
            fix="remove `stratify:`",
        )
    searchable = (*PROMPT_SEARCHABLE, *(PROMPT_SEARCHABLE_GENERATE if not classify else ()))
    if not search.space:
        raise reader.error(
            "name at least one option to search", *at, "search", fix=f"searchable here: {', '.join(searchable)}"
        )
    for param, values in search.space.items():
        _check_searched_option(reader, config, cand, param, values, (*at, "search", param), searchable)


def _check_searched_option(
    reader: _Reader,
    config: SuiteConfig,
    cand: Candidate,
    param: str,
    values: Any,
    where: tuple,
    searchable: tuple[str, ...],
) -> None:
    """One option of a `search:` block: searchable for this task, and every value it lists (or both ends of
    its range) one the option accepts."""
    classify = task_kind(config.task.kind).offers_choices
    options = ", ".join(o for o in PROMPT_SEARCH_OPTIONS if o != "space")
    if param not in searchable:
        why = (
            f"'{param}' applies to generate tasks only"
            if param in PROMPT_SEARCHABLE_GENERATE
            else f"'{param}' is not a searchable option{did_you_mean(param, searchable)}"
        )
        raise reader.error(why, *where, fix=f"searchable here: {', '.join(searchable)}; search options: {options}")
    if isinstance(values, list) and not values:
        raise reader.error(f"search: '{param}' lists no values", *where, fix="list at least one value")
    if param == "calibration" and not classify:
        raise reader.error("calibration applies to classify tasks only", *where)
    if param == "system" and not cand.chat:
        raise reader.error(
            "search: system messages apply only with `chat: true`", *where, fix="add `chat: true` to the candidate"
        )
    if not isinstance(values, list) and param in ("fewshot.select", "fewshot.order", "template", "calibration"):
        raise reader.error(f"search: '{param}' takes a list of values, not a range", *where)
    if not isinstance(values, list) and not values.integer and param in ("fewshot.k", "fewshot.seed", "max_new_tokens"):
        raise reader.error(f"search: '{param}' takes whole numbers: a range of integers", *where)
    for value in [values.low, values.high] if not isinstance(values, list) else values:
        _check_search_value(reader, config, cand, param, value, where)


def _check_search_value(
    reader: _Reader, config: SuiteConfig, cand: Candidate, param: str, value: Any, where: tuple
) -> None:
    """One value of a searched option, validated as the option itself is when written in the suite."""
    if param == "template":
        if not isinstance(value, str):
            raise reader.error(f"search: template {value!r} is not a template file name", *where)
        reader.existing(value, *where, what="prompt template")
        return
    try:
        if param in PROMPT_SEARCHABLE_GENERATE and param != "system":
            TaskConfig.model_validate({**config.task.model_dump(exclude_unset=True), param: value})
        else:
            cand.with_values({param: value})
    except ValidationError as error:
        problem = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise reader.error(
            f"search: {param} = {value!r} is not a valid value: {problem}",
            *where,
            fix=f"`{param}` means: {_describe(('candidates', cand.name, *param.split('.')))}"
            if param.startswith("fewshot.") or param in ("calibration", "system")
            else None,
        ) from None


def _metric_names(reader: _Reader, config: SuiteConfig, candidates: dict[str, Candidate]) -> tuple[str, ...]:
    """The metrics the suite reports (its task kind's, and invariance with `robustness:`), its robustness
    and baseline sections checked against them."""
    task, robustness = config.task, config.robustness
    if config.lm_eval is not None:  # the task's metrics are known when lm_eval loads it: checked then
        return lm_eval_metric_names(config)
    names = task_kind(task.kind).metrics
    if robustness is not None:
        from evalkit.robustness import check_perturbations

        for name in robustness.candidates or []:
            if name not in candidates:
                raise reader.error(
                    f"robustness names candidate '{name}', which the suite does not define"
                    f"{did_you_mean(name, candidates)}",
                    "robustness",
                    "candidates",
                    fix=f"candidates are: {', '.join(candidates)}",
                )
        try:
            check_perturbations(robustness.perturbations, task_kind(task.kind).offers_choices, task.kind)
        except ValueError as exc:
            raise reader.error(
                str(exc),
                "robustness",
                "perturbations",
                fix="list perturbations by name; the README's robustness section describes each",
            ) from None
        names = (*names, "invariance")
    gateable = (*task_kind(task.kind).per_example, *(("invariance",) if robustness is not None else ()))
    if config.baseline.metric not in gateable:
        problem = (
            "is a statistic of the whole set, not a mean over examples that a paired test can compare"
            if config.baseline.metric in names
            else f"is not reported by a {task.kind} task"
        )
        raise reader.error(
            f"baseline metric '{config.baseline.metric}' {problem}",
            "baseline",
            "metric",
            fix=f"use one of: {', '.join(gateable)}",
        )
    return names


def _threshold(
    reader: _Reader, metric_names: tuple[str, ...], kind: str, metric: str, expression: Any, *loc: Any
) -> Threshold:
    if metric not in metric_names and metric not in LATENCY_METRICS:
        if metric == "invariance":
            raise reader.error(
                "metric 'invariance' needs a `robustness:` section",
                *loc,
                fix="add `robustness: {perturbations: [case, typos]}`",
            )
        raise reader.error(
            f"unknown metric '{metric}' in thresholds{did_you_mean(metric, metric_names)}",
            *loc,
            fix=f"a {kind} task reports: {', '.join(metric_names)}",
        )
    try:
        return parse_threshold(metric, expression)
    except ThresholdError as exc:
        raise reader.error(exc.message, *loc, fix=exc.fix) from None


def _thresholds(
    reader: _Reader, config: SuiteConfig, candidates: dict[str, Candidate], metric_names: tuple[str, ...]
) -> dict[str, dict[str, Threshold]]:
    """Every candidate's thresholds: the shared ones, overridden by its own."""
    shared: dict[str, Threshold] = {}
    overrides: dict[str, dict[str, Threshold]] = {}
    kind = config.task.kind
    for key, value in config.written_thresholds.items():
        if isinstance(value, dict):
            if key not in candidates:
                raise reader.error(
                    f"thresholds for '{key}', which is not a candidate{did_you_mean(key, candidates)}",
                    "thresholds",
                    key,
                    fix=f"candidates are: {', '.join(candidates)}",
                )
            overrides[key] = {
                m: _threshold(reader, metric_names, kind, m, e, "thresholds", key, m) for m, e in value.items()
            }
        elif key in candidates:
            raise reader.error(
                f"thresholds for candidate '{key}' must be a mapping of metric to comparison",
                "thresholds",
                key,
                fix=f'write `{key}: {{accuracy: ">= 0.5"}}`',
            )
        else:
            shared[key] = _threshold(reader, metric_names, kind, key, value, "thresholds", key)
    robust = config.robustness
    tested = set(candidates) if robust is None or robust.candidates is None else set(robust.candidates)
    for name, own in overrides.items():
        if "invariance" in own and name not in tested:
            raise reader.error(
                f"threshold on invariance for '{name}', which `robustness.candidates` leaves out",
                "thresholds",
                name,
                "invariance",
                fix=f"add '{name}' to `robustness.candidates`, or drop the threshold",
            )
    owned = {name: {**overrides.get(run.base_name, {}), **overrides.get(name, {})} for name, run in candidates.items()}
    return {
        name: {
            m: t
            for m, t in {**shared, **owned[name]}.items()
            # a shared invariance threshold: tested runs only; a shared latency one: served runs only
            if (m != "invariance" or name in tested)
            and (m not in LATENCY_METRICS or m in owned[name] or served(run.model or config.model))
        }
        for name, run in candidates.items()
    }


def check_lm_eval_section(reader: _Reader, settings: LmEvalSettings) -> None:
    """What an `lm_eval:` section names exists, found without importing lm_eval: the package, a task
    YAML of the suite's own, and local data files."""
    if importlib.util.find_spec("lm_eval") is None:
        raise reader.error(
            "an `lm_eval:` suite needs lm-evaluation-harness, which is not installed",
            "lm_eval",
            fix="pip install 'evalkit[lm-eval]'",
        )
    if settings.own_yaml:
        reader.existing(settings.task, "lm_eval", "task", what="task YAML")
    files = settings.data_files
    for split, file in ({"": files} if isinstance(files, str) else files or {}).items():
        reader.existing(file, "lm_eval", "data_files", *([split] if split else []), what="data file")


def lm_eval_metric_names(config: SuiteConfig) -> tuple[str, ...]:
    """The metrics an `lm_eval:` suite may gate: the gated one and those its thresholds name, each checked
    against what the task reports once it runs."""
    assert config.lm_eval is not None
    written: list[str] = ["accuracy", config.lm_eval.metric]
    for key, value in config.written_thresholds.items():
        written.extend(value if isinstance(value, dict) else [key])
    return tuple(dict.fromkeys(m.removesuffix(",none") for m in written if METRIC_NAME.match(m)))


def _validated(path: Path) -> tuple[Any, SuiteConfig]:
    document = load_yaml(path)
    if not isinstance(document, dict):
        raise SuiteError(
            "a suite file must be a YAML mapping with `suite:`, `dataset:`, `task:` and `candidates:`",
            path=path,
            line=1,
        )
    try:
        return document, SuiteConfig.model_validate(dict(document), context={"lm_eval": "lm_eval" in document})
    except ValidationError as exc:
        raise _format_validation_error(exc, document, path) from None


def _one_of(names: list[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _check_backend(reader: _Reader, model: ModelConfig, *at: str | int) -> None:
    """The backend is one some package registered, and the `model:` keys it does not share are its own.
    ``at`` is where the model block is written (the suite's `model:` by default)."""
    at = at or ("model",)
    shown = ".".join(map(str, at))
    backend = model.backend
    if backend not in backend_names():
        raise reader.error(
            f"{shown}.backend: Input should be {_one_of(backend_names())}{did_you_mean(backend, backend_names())}",
            *at,
            "backend",
            fix=f"other backends register under the '{BACKENDS.group}' entry-point group",
        )
    if backend == "hf":  # an alias, a hub id or a folder: a folder's path must be one the OS accepts
        reader.usable_path(model.name, *at, "name", what="model")
    try:
        settings = backend_class(backend).Settings
    except ModelError as exc:  # its package failed to import
        raise reader.error(exc.message, *at, "backend", fix=exc.fix) from None
    allowed = [*ModelConfig.model_fields, *settings.model_fields]
    for key in model.model_extra or {}:
        if key not in settings.model_fields:
            raise reader.error(
                f"unknown key '{key}'{did_you_mean(key, allowed)}",
                *at,
                key,
                fix=f"allowed keys here: {', '.join(allowed)}",
            )
    try:
        settings.model_validate(model.model_extra or {})
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        description = (
            settings.model_fields[str(loc[0])].description if loc and str(loc[0]) in settings.model_fields else None
        )
        raise reader.error(
            f"{shown}.{'.'.join(map(str, loc))}: {error['msg'].removeprefix('Value error, ')}",
            *at,
            *loc,
            fix=f"`{loc[-1]}:` means: {description}" if description else None,
        ) from None


def _check_names(reader: _Reader, config: SuiteConfig) -> None:
    """The backend and the task kind are ones some package registered, and both accept their settings."""
    _check_backend(reader, config.model)
    kind = config.task.kind
    written = [name for name in TASK_KINDS.names() if name != "lm_eval"]  # lm_eval: set by `lm_eval:`
    if kind not in TASK_KINDS:
        raise reader.error(
            f"task.kind: Input should be {_one_of(written)}{did_you_mean(kind, written)}",
            "task",
            "kind",
            fix=f"other kinds register under the '{TASK_KINDS.group}' entry-point group",
        )
    if (kind == "lm_eval") != (config.lm_eval is not None):
        raise reader.error(
            "task.kind lm_eval is set by an `lm_eval:` section", "task", "kind", fix="write `lm_eval: {task: NAME}`"
        )
    try:
        task_kind(kind).check(config.task)
    except ValueError as exc:
        raise reader.error(f"task: {exc}", "task") from None


def load_suite(path: str | Path) -> SuiteSpec:
    """Read and validate a suite file; every problem raises SuiteError naming the file and line."""
    path = Path(path)
    document, config = _validated(path)
    reader = _Reader(path, document)
    _check_names(reader, config)
    if config.lm_eval is None:
        reader.existing(config.dataset.path, "dataset", "path", what="dataset")
    else:
        check_lm_eval_section(reader, config.lm_eval)
    train = _train_specs(reader, config)
    candidates = expand_runs(reader, config, _candidates(reader, config, train))
    for run in candidates.values():
        if run.model is not None:
            _check_backend(reader, run.model, *_model_at(run))
    config = config.model_copy(update={"candidates": candidates})
    scorer = _scorer(reader, config.task, list(candidates))
    _check_judge_adapters(reader, config, scorer)
    metric_names = _metric_names(reader, config, candidates)
    check_compare(reader, config, candidates, task_kind(config.task.kind).per_example)
    thresholds = _thresholds(reader, config, candidates, metric_names)
    check_latency_thresholds(reader, candidates, thresholds, lambda name: candidates[name].model or config.model)
    lines = {"model": reader.line("model"), "suite": reader.line("suite")}
    lines |= {f"models.{name}": reader.line("models", name) for name in config.models}
    lines |= {f"compare.{i}": reader.line("compare", i) for i in range(len(config.compare))}
    if config.lm_eval is not None:
        lines |= {"lm_eval": reader.line("lm_eval")}
        lines |= {f"lm_eval.{key}": reader.line("lm_eval", key) for key in config.lm_eval.model_fields_set}
    lines |= {
        f"candidates.{name}.model": reader.line("candidates", name, "model")
        for name, run in candidates.items()
        if run.model is not None and run.model_name is None
    }
    return config.resolved(path, lines=lines, thresholds=thresholds, scorer=scorer, metric_names=metric_names)


def _check_judge_adapters(reader: _Reader, config: SuiteConfig, scorer: Any) -> None:
    """A judge's `adapter:` names a judge adapter of `train:`; a judge adapter is for the suite's judge."""
    named = getattr(getattr(scorer, "settings", None), "adapter", None)
    if named is not None:
        entry = config.train.get(named)
        if entry is None or not entry.judge:
            problem = (
                f"is not an adapter of `train:`{did_you_mean(named, config.train)}"
                if entry is None
                else "has a `train:` entry without `judge: true`"
            )
            raise reader.error(
                f"the judge's adapter '{named}' {problem}",
                "task",
                "scorer",
                "adapter",
                fix=f"add `train: {{{named}: {{judge: true, data: <labelled verdicts>, output: ...}}}}`",
            )
    for name, entry in config.train.items():
        if entry.judge and named != name:
            raise reader.error(
                f"adapter '{name}' is a judge adapter (`judge: true`), but the suite's judge does not use it",
                "train",
                name,
                "judge",
                fix=f"name it in the judge's block: `scorer: {{name: judge, ..., adapter: {name}}}`",
            )


def _model_at(run: Candidate) -> tuple[str, ...]:
    """Where the model block of ``run`` is written: its entry in `models:`, or the candidate's `model:`."""
    if run.model_name is not None:
        return ("models", run.model_name)
    return ("candidates", run.base_name, "model")


def suites_defining(
    adapter: str, paths: Iterable[Path], load: Callable[[Path], SuiteSpec] = load_suite
) -> list[SuiteSpec]:
    """The suites among ``paths`` whose `train:` defines ``adapter`` (one that cannot be read is passed over)."""
    owners = []
    for path in paths:
        try:
            spec = load(path)
        except EvalkitError:
            continue
        if adapter in spec.train:
            owners.append(spec)
    return owners


def the_suite_defining(adapter: str, owners: Sequence[SuiteSpec], *, searched: str, fix: str) -> SuiteSpec:
    """The one suite among ``owners`` (those of ``searched`` that define ``adapter``); none, or several,
    is an error."""
    if len(owners) != 1:
        where = ", ".join(str(spec.path) for spec in owners) if owners else f"no suite {searched}".rstrip()
        raise EvalkitError(f"adapter '{adapter}' is defined by {where}", fix=fix)
    return owners[0]

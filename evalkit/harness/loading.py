"""Loading an lm-evaluation-harness task as lm-eval itself does (its TaskManager, its task configs), with
the dataset read from where the suite says: `data_files:`, a mirror folder, or the hub.

Where the data comes from, for each task that names a hub dataset (``dataset_path``):

1. ``data_files:`` in the suite: local files in the hub's schema, read with the ``json`` builder;
2. the mirror (``EVALKIT_DATASETS_MIRROR``, or the ``evalkit_datasets_mirror`` ini option): a folder laid out
   as ``<hub id>/<config>/<split>.jsonl``, used when it holds the task's evaluation split;
3. the hub itself, at ``revision:`` when the suite pins one.

The source of each task goes into the run record. Splits the mirror lacks are dropped from the task; a
task that needs one of them for its few-shot examples is refused with the split named.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from evalkit.errors import SuiteError
from evalkit.harness.settings import LmEvalSettings
from evalkit.record import TaskSource

MIRROR_VARIABLE = "EVALKIT_DATASETS_MIRROR"
SPLIT_KEYS = ("training_split", "validation_split", "test_split")
_mirror_option: str | None = None  # the ini option, set by the plugin when a session starts


def set_mirror_option(value: str | None) -> None:
    """The `evalkit_datasets_mirror` ini option of the running pytest session (the variable wins)."""
    global _mirror_option
    _mirror_option = value or None


def mirror_folder() -> Path | None:
    value = os.environ.get(MIRROR_VARIABLE) or _mirror_option
    return Path(value).expanduser().resolve() if value else None


class LmEvalError(SuiteError):
    """A problem with an `lm_eval:` section found when lm_eval loads the task."""


@cache
def task_manager(include_path: str | None = None) -> Any:
    """lm-eval's TaskManager (it indexes every task YAML once: seconds), with a folder of the suite's own."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def is_package_task(yaml_path: Path | None) -> bool:
    """Whether a task YAML ships inside the installed lm_eval package (a dependency's code: trusted)."""
    import lm_eval

    return yaml_path is not None and Path(lm_eval.__file__).parent in yaml_path.resolve().parents


class _FunctionRef(str):
    """A `!function` reference met while reading a task YAML without importing it."""


class _ScanLoader(yaml.SafeLoader):
    pass


_ScanLoader.add_constructor("!function", lambda loader, node: _FunctionRef(loader.construct_scalar(node)))  # type: ignore[arg-type]


def task_code(path: Path, seen: frozenset[Path] = frozenset()) -> Iterator[tuple[str, str, Path]]:
    """Each (key, function, file) a task YAML (and the files it includes) would run as Python; functions of
    YAMLs shipped inside lm_eval (a dependency's code) are not counted."""
    path = path.resolve()
    if path in seen or is_package_task(path):
        return
    with path.open(encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=_ScanLoader)
    if not isinstance(document, dict):
        return
    includes = document.get("include") or []
    for included in [includes] if isinstance(includes, str) else includes:
        yield from task_code(path.parent / included, seen | {path})

    def walk(value: Any, key: str) -> Iterator[tuple[str, str, Path]]:
        if isinstance(value, _FunctionRef):
            yield key, str(value), path
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from walk(v, f"{key}[{i}]")

    yield from walk(document, "")


def _factory_class() -> type:
    from lm_eval.tasks._factory import TaskFactory

    class SourcedFactory(TaskFactory):
        """lm-eval's task factory, with each task's dataset read from the suite's source."""

        def __init__(self, *, meta: dict[str, Any] | None, source: _SourcePolicy) -> None:
            super().__init__(meta=meta)
            self.source = source

        def _load_full_config(self, entry: Any, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
            cfg = super()._load_full_config(entry, overrides)
            if entry.yaml_path is not None:
                self.source.check_code(Path(entry.yaml_path), str(cfg.get("task", entry.name)))
            if isinstance(cfg.get("dataset_path"), str) and "task" in cfg:
                self.source.apply(cfg)
            return cfg

    return SourcedFactory


@dataclass
class _SourcePolicy:
    settings: LmEvalSettings
    base_dir: Path
    suite_path: Path
    mirror: Path | None
    line: Callable[[str], int | None]
    sources: dict[str, TaskSource] = field(default_factory=dict)

    def check_code(self, yaml_path: Path, task: str) -> None:
        if self.settings.trust_task_code:
            return
        for key, function, file in task_code(yaml_path):
            raise LmEvalError(
                f"task '{task}' runs Python: `{key}: !function {function}` in {file}; a task of your own runs "
                "its code only when the suite trusts it",
                path=self.suite_path,
                line=self.line("task"),
                fix="review the function, then set `lm_eval: {trust_task_code: true}`",
            )

    def apply(self, cfg: dict[str, Any]) -> None:
        task, hub_id, config = str(cfg["task"]), str(cfg["dataset_path"]), cfg.get("dataset_name")
        dataset = f"{hub_id} {config}" if config else hub_id
        files = self._data_files(cfg) or self._mirrored(cfg, hub_id, config)
        kwargs = dict(cfg.get("dataset_kwargs") or {})
        if files is None:
            if self.settings.revision is not None:
                kwargs["revision"] = self.settings.revision
                cfg["dataset_kwargs"] = kwargs
            self.sources[task] = TaskSource(kind="hub", dataset=dataset, revision=self.settings.revision)
            return
        kind, chosen = files
        for key in SPLIT_KEYS:
            if cfg.get(key) is not None and cfg[key] not in chosen:
                cfg[key] = None
        fewshot = cfg.get("fewshot_config") or {}
        wanted = fewshot.get("split") or cfg.get("fewshot_split")
        if wanted is not None and wanted not in chosen:
            if self._shots(cfg):
                raise self._missing_split(task, wanted, "few-shot examples", kind)
            cfg.pop("fewshot_split", None)
            cfg["fewshot_config"] = {k: v for k, v in fewshot.items() if k != "split"}
        if not any(cfg.get(key) for key in ("validation_split", "test_split")):
            raise self._missing_split(task, "/".join(str(s) for s in self._eval_splits(cfg)), "documents", kind)
        cfg["dataset_path"], cfg["dataset_name"] = "json", None
        cfg["dataset_kwargs"] = {**{k: v for k, v in kwargs.items() if k != "revision"}, "data_files": chosen}
        self.sources[task] = TaskSource(kind=kind, dataset=dataset, files=chosen)

    def _shots(self, cfg: dict[str, Any]) -> int:
        shots = self.settings.num_fewshot if self.settings.num_fewshot is not None else cfg.get("num_fewshot")
        return int(shots or 0)

    @staticmethod
    def _eval_splits(cfg: dict[str, Any]) -> list[str]:
        return [cfg[key] for key in ("test_split", "validation_split") if cfg.get(key)] or ["test"]

    def _data_files(self, cfg: dict[str, Any]) -> tuple[Literal["data_files"], dict[str, str]] | None:
        given = self.settings.data_files
        if given is None:
            return None
        if isinstance(given, str):
            split = (cfg.get("test_split") or cfg.get("validation_split")) or "test"
            given = {split: given}
        return "data_files", {split: str((self.base_dir / file).resolve()) for split, file in given.items()}

    def _mirrored(
        self, cfg: dict[str, Any], hub_id: str, config: str | None
    ) -> tuple[Literal["mirror"], dict[str, str]] | None:
        if self.mirror is None:
            return None
        folder = self.mirror / hub_id / (config or "default")
        found = {
            split: str(folder / f"{split}.jsonl")
            for split in {cfg.get(key) for key in SPLIT_KEYS} | {cfg.get("fewshot_split")}
            if split and (folder / f"{split}.jsonl").is_file()
        }
        if not any(split in found for split in self._eval_splits(cfg)):
            return None  # the mirror does not hold this dataset: the hub
        return "mirror", found

    def _missing_split(self, task: str, split: str, purpose: str, kind: str) -> LmEvalError:
        where = "the mirror" if kind == "mirror" else "`data_files:`"
        return LmEvalError(
            f"task '{task}' takes its {purpose} from split '{split}', which {where} does not hold",
            path=self.suite_path,
            line=self.line("data_files" if kind == "data_files" else "task"),
            fix=f"add that split to {where} ({{{split}: FILE}}), or set `lm_eval: {{num_fewshot: 0}}`"
            if purpose == "few-shot examples"
            else f"add that split to {where}",
        )


@dataclass
class LoadedTask:
    """A suite's lm-eval task (or group) built by lm-eval, and where each task's documents come from."""

    name: str
    loaded: dict[str, Any]  # TaskManager.load's {tasks, groups, group_map}
    sources: dict[str, TaskSource]
    manager: Any


def load_task(
    settings: LmEvalSettings, suite_path: Path, line: Callable[[str], int | None] = lambda key: None
) -> LoadedTask:
    """The suite's task, built by lm-eval's TaskManager, with its data source applied; a name lm-eval does
    not know is refused with the closest ones it does. ``line(key)``: where the suite writes a key of its
    `lm_eval:` section, for errors."""
    base_dir = suite_path.parent
    name = settings.task
    manager = task_manager(str((base_dir / name).resolve().parent) if settings.own_yaml else None)
    if settings.own_yaml:
        from lm_eval.tasks._index import TaskIndex

        entry = TaskIndex.entry_from_path(base_dir / name)
        if entry is None:
            raise LmEvalError(
                f"{name} is not an lm-eval task YAML (it names no `task:` or `group:`)",
                path=suite_path,
                line=line("task"),
                fix="see lm-eval's task guide: a task YAML names `task:`, `dataset_path:` and `doc_to_text:`",
            )
        path = (base_dir / name).resolve()
        indexed = [key for key, e in manager.task_index.items() if e.yaml_path and Path(e.yaml_path).resolve() == path]
        name = indexed[0] if indexed else str(entry.name)  # the index names a group by its `group:`
    elif name not in manager.task_index:
        from evalkit.errors import did_you_mean

        raise LmEvalError(
            f"lm_eval has no task or group '{name}'{did_you_mean(name, manager.all_tasks)}",
            path=suite_path,
            line=line("task"),
            fix="list them with `lm_eval ls tasks`, or name a task YAML of your own (a path ending in .yaml)",
        )
    policy = _SourcePolicy(settings, base_dir, suite_path, mirror_folder(), line)
    previous = manager._factory
    manager._factory = _factory_class()(meta=getattr(previous, "_meta", None), source=policy)
    try:
        loaded = manager.load([name if name in manager.task_index else str((base_dir / settings.task).resolve())])
    except (FileNotFoundError, ConnectionError) as exc:
        raise _missing_dataset(settings, suite_path, policy, exc) from None
    except Exception as exc:
        missing = missing_field(exc)
        if missing is None:
            raise
        raise schema_error(name, missing, policy.sources, suite_path, line("data_files")) from None
    finally:
        manager._factory = previous
    return LoadedTask(name=name, loaded=loaded, sources=policy.sources, manager=manager)


def missing_field(exc: BaseException) -> str | None:
    """The document field a task read and did not find: a KeyError's key, or a template's undefined name."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    import jinja2

    if isinstance(exc, jinja2.exceptions.UndefinedError):
        match = re.match(r"'([^']+)' is undefined", str(exc))
        if match:
            return match.group(1)
        match = re.search(r"has no attribute '([^']+)'", str(exc))
        return match.group(1) if match else None
    return None


def schema_error(
    task: str, field_name: str, sources: dict[str, TaskSource], suite_path: Path, line: int | None
) -> LmEvalError:
    """Documents without a field the task reads: the data does not follow the hub's schema."""
    files = [file for source in sources.values() for file in source.files.values()]
    datasets = ", ".join(source.dataset for source in sources.values()) or "the task's"
    return LmEvalError(
        f"task '{task}' reads field '{field_name}', which the documents of {', '.join(files) or 'its dataset'} lack",
        path=suite_path,
        line=line,
        fix=f"give the rows the fields of the hub dataset {datasets}, as lm-eval's task YAML reads them",
    )


def _missing_dataset(settings: LmEvalSettings, suite_path: Path, policy: _SourcePolicy, exc: Exception) -> LmEvalError:
    mirror = policy.mirror
    return LmEvalError(
        f"the dataset of task '{settings.task}' could not be read ({str(exc).splitlines()[0][:200]})",
        path=suite_path,
        line=policy.line("task"),
        fix="point `lm_eval: {data_files: ...}` at local files in the hub's schema; or set "
        f"{MIRROR_VARIABLE} (now {'unset' if mirror is None else mirror}) to a folder laid out as "
        "<hub id>/<config>/<split>.jsonl; or allow the hub (unset HF_HUB_OFFLINE and HF_DATASETS_OFFLINE)",
    )

"""Adapters on disk: is one missing or stale, train it (atomically, resumable), and describe it.

An adapter folder is complete when it holds ``training.json``: the trainer writes everything into a
hidden sibling folder and renames it into place as the last step, so an interrupted run never leaves
a folder that loads as complete. Checkpoints stay in ``.<name>.partial/`` (tagged with the content
hash) until the adapter is published, so a rerun with the same inputs resumes from the last one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evalkit.atomic import replace_directory
from evalkit.data import Dataset, load_dataset
from evalkit.errors import ModelError, TrainingError, shown_path
from evalkit.models import file_lock, resolve_model
from evalkit.record import AdapterInfo, CrossValidation, DataCheck, TrainingRecord
from evalkit.spec import SuiteSpec, TrainSpec
from evalkit.suite import load_suite
from evalkit.train.checks import check_training_data, stop_on_serious
from evalkit.train.examples import (
    Duplicate,
    TrainingSet,
    build_training_set,
    content_hash,
    find_contamination,
    kfold_rows,
    split_rows,
)
from evalkit.train.processes import rank, world_size

if TYPE_CHECKING:
    from evalkit.judge.settings import Scale
    from evalkit.judge.training import JudgeTraining
    from evalkit.train.trainer import FitResult

RECORD = "training.json"
WEIGHTS = "adapter_model.safetensors"
TrainMode = Literal["auto", "never", "always"]
TRAIN_MODES = ("auto", "never", "always")


@dataclass(frozen=True)
class TrainedAdapter:
    """An adapter ready to evaluate: where it is, what produced it, and whether it was trained just now."""

    name: str
    path: Path
    training: TrainingRecord | None  # None on the other processes of a distributed run: the first one writes it
    trained_now: bool
    contamination: tuple[Duplicate, ...] = ()
    allow_contamination: bool = False

    @functools.cached_property
    def record(self) -> dict[str, Any]:
        """``training.json`` as it holds it (empty on the other processes of a distributed run)."""
        return self.training.as_json() if self.training is not None else {}

    def _written(self) -> TrainingRecord:
        if self.training is None:
            raise TrainingError(
                f"adapter '{self.name}' was written by the first process of this distributed run",
                fix="read its record in that process (rank 0), or from its training.json once training ends",
            )
        return self.training

    @property
    def content_hash(self) -> str:
        return self._written().content_hash or ""

    @property
    def key(self) -> str:
        """Unique per adapter version: a retrained adapter never reuses a stale attached copy."""
        return f"{self.name}@{self.content_hash[:12]}"

    def cost(self) -> dict[str, Any]:
        record = self._written()
        return {  # train_s: the search's trials included
            "train_s": record.train_s(),
            "trainable_parameters": record.trainable_parameters,
            "adapter_bytes": record.adapter_bytes,
        }

    def info(self) -> AdapterInfo:
        """What results.json says about the adapter behind a candidate."""
        contamination = [str(d) for d in self.contamination]
        return AdapterInfo.of(
            self._written(),
            name=self.name,
            path=str(self.path),
            trained_now=self.trained_now,
            contamination=contamination,
        )

    def summary(self) -> dict[str, Any]:
        """:meth:`info` as results.json holds it."""
        return self.info().model_dump(mode="json", exclude_unset=True)


def read_training_record(folder: Path) -> TrainingRecord | None:
    """The adapter's ``training.json``, or None when it is missing, not JSON or not a training record."""
    try:
        return TrainingRecord.model_validate(json.loads((folder / RECORD).read_text(encoding="utf-8")))
    except (OSError, ValueError):  # a pydantic ValidationError is a ValueError
        return None


def read_record(folder: Path) -> dict[str, Any] | None:
    """:func:`read_training_record` as JSON."""
    record = read_training_record(folder)
    return record.as_json() if record is not None else None


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stale_reason(record: TrainingRecord | None, folder: Path, expected: _Expected) -> str | None:
    """Why the adapter in ``folder`` cannot be used as is, or None when it is up to date."""
    if not folder.exists():
        return "it has not been trained yet"
    if record is None:
        return f"{shown_path(folder)} holds no complete adapter ({RECORD} is missing or unreadable)"
    weights = folder / WEIGHTS
    if not weights.is_file() or _sha256_file(weights) != record.adapter_sha256:
        return f"its weights file {weights.name} is missing or does not match {RECORD} (a damaged or replaced file)"
    try:
        json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its adapter_config.json is missing or not valid JSON"
    if record.content_hash == expected.content_hash:
        return None
    if record.base_model_fingerprint != expected.base_model_fingerprint:
        return (
            f"it was trained for another base model (fingerprint {str(record.base_model_fingerprint)[:12]}, "
            f"the suite's model is {expected.base_model_fingerprint[:12]})"
        )
    if record.examples_sha256 != expected.examples_sha256:
        return "its training rows, prompt template or completions changed"
    old, new = record.hyperparameters, expected.hyperparameters
    changed = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if changed:
        return "hyperparameters changed: " + "; ".join(changed)
    return "it was trained by an incompatible evalkit version"


def _monitor_folder(reports_dir: Path | None, name: str) -> Path:
    """Where TensorBoard / MLflow get this training's curves: <reports>/training/<adapter>/<UTC time>."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return (reports_dir or Path("reports")) / "training" / name / stamp


@dataclass(frozen=True)
class _Expected:
    """What the record of an up-to-date adapter says: its content hash, and what the hash is made of."""

    content_hash: str
    base_model_fingerprint: str
    examples_sha256: str
    hyperparameters: dict[str, Any]


def _expected(training: TrainingSet, base_fingerprint: str) -> _Expected:
    return _Expected(
        content_hash=content_hash(training, base_fingerprint),
        base_model_fingerprint=base_fingerprint,
        examples_sha256=training.examples_sha256(),
        hyperparameters=training.train.hyperparameters(),
    )


def _cross_validate(
    training: TrainingSet, model_path: Path, folds: int, work: Path, run: _TrainingRun
) -> CrossValidation:
    """k-fold cross-validation: each fold's best validation accuracy. A judge adapter's folds are its
    calibration: each judge is trained without its fold, with no checkpoint chosen on it, and graded on it."""
    from evalkit.train.trainer import fit, scored_rows

    config = training.train
    accuracies, held_out = [], []
    for fold, (train_idx, val_idx) in enumerate(kfold_rows(len(training), folds, config.seed)):
        result = fit(
            training,
            model_path,
            train_idx,
            [] if run.judge_scale is not None else val_idx,
            work / f"fold-{fold}",
            resume=False,
            notify=run.notify,
            progress_bar=run.progress_bar,
            label=f"{training.train.name} fold {fold + 1}/{folds}",
        )
        if run.judge_scale is not None:
            from evalkit.judge.training import held_out_fold

            graded = scored_rows(training, result.tokenizer, val_idx)(result.model)
            held_out.append(held_out_fold(graded.examples, run.judge_scale))
            accuracies.append(held_out[-1].accuracy)
        else:
            accuracies.append(result.record.best_validation_accuracy or 0.0)
        shutil.rmtree(work / f"fold-{fold}", ignore_errors=True)
    return CrossValidation(
        folds=folds,
        accuracy=accuracies,
        mean=round(statistics.fmean(accuracies), 4),
        stdev=round(statistics.stdev(accuracies), 4) if folds > 1 else 0.0,
        **({"held_out": held_out} if held_out else {}),
    )


def _partial_folder(output: Path, content_hash: str) -> tuple[Path, bool]:
    """The folder an interrupted training resumes from, and whether it holds this same training's work."""
    partial = output.parent / f".{output.name}.partial"
    marker = partial / "partial.json"
    try:
        resumable = json.loads(marker.read_text())["content_hash"] == content_hash
    except (OSError, ValueError, KeyError):
        resumable = False
    if not resumable and rank() == 0:  # under torchrun every process gets here; one prepares the folder
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        marker.write_text(json.dumps({"content_hash": content_hash}))
    return partial, resumable


def _save_adapter(training: TrainingSet, model: Any, staged: Path) -> Path:
    """Save the peft adapter into ``staged``, naming its base model portably; the weights file."""
    shutil.rmtree(staged, ignore_errors=True)
    model.save_pretrained(str(staged), safe_serialization=True)
    adapter_config = staged / "adapter_config.json"
    peft_config = json.loads(adapter_config.read_text())
    peft_config["base_model_name_or_path"] = training.spec.model.name  # portable: not this machine's cache path
    adapter_config.write_text(json.dumps(peft_config, indent=2) + "\n")
    (staged / "README.md").unlink(missing_ok=True)
    return staged / WEIGHTS


def _published(
    fit: FitResult, expected: _Expected, weights: Path, cross_validation: CrossValidation | None, wall_seconds: float
) -> TrainingRecord:
    """``training.json``: the trainer's record of the run, with what the adapter depends on and its weights."""
    from evalkit.version import __version__

    return fit.record.model_copy(
        update={
            **dataclasses.asdict(expected),
            "cross_validation": cross_validation,
            "wall_seconds": round(wall_seconds, 3),
            "adapter_bytes": weights.stat().st_size,
            "adapter_sha256": _sha256_file(weights),
            "trained_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "evalkit_version": __version__,
        }
    )


@dataclass(frozen=True)
class _TrainingRun:
    """How ensure_adapter was asked to train: who hears about it, and what else it does."""

    notify: Callable[[str], None] | None
    progress_bar: bool
    folds: int | None
    callbacks: Sequence[Any]
    reports_dir: Path | None
    judge_scale: Scale | None = None  # a judge adapter's grades: its folds are its calibration


def _train(
    training: TrainingSet, resolved, expected: _Expected, run: _TrainingRun, data_checks: list[DataCheck]
) -> TrainingRecord | None:
    """Train the adapter and publish it; None on the other processes of a distributed run (the first writes it)."""
    from evalkit.train.trainer import fit

    notify, progress_bar, callbacks = run.notify, run.progress_bar, run.callbacks
    config = training.train
    partial, resumable = _partial_folder(config.output_path, expected.content_hash)
    monitor = _monitor_folder(run.reports_dir, config.name) if config.report_to else None
    search_record = None
    if config.search is not None:
        from evalkit.train.search import SearchContext, search

        context = SearchContext(training, resolved.path, partial / "search", notify, progress_bar, callbacks, monitor)
        best, search_record = search(context, config.search)
        training = dataclasses.replace(training, train=best)
        config = best
        if notify is not None:
            notify(f"{config.name}: best of {len(search_record.trials)} trials: {search_record.best.params}")
    started = time.perf_counter()
    cross_validation = None
    folds = run.folds or config.validation.folds
    if folds:
        cross_validation = _cross_validate(training, resolved.path, folds, partial / "folds", run)
    split = split_rows(len(training), config.validation.fraction, config.seed)
    result = fit(
        training,
        resolved.path,
        *split,
        partial / "checkpoints",
        resume=resumable,
        notify=notify,
        progress_bar=progress_bar,
        callbacks=callbacks,
        monitor_dir=monitor,
    )
    if not result.is_main_process:  # other ranks of a distributed run: rank 0 writes the adapter
        return None
    staged = partial / "adapter"
    weights = _save_adapter(training, result.model, staged)
    record = _published(result, expected, weights, cross_validation, time.perf_counter() - started)
    # what check_training_data found before training, and the search (`config` above holds its best settings)
    record = record.model_copy(update={"data_checks": data_checks, "search": search_record})
    # training.json is written last: it marks the adapter complete
    (staged / RECORD).write_text(json.dumps(record.as_json(), indent=2) + "\n", encoding="utf-8")
    replace_directory(staged, config.output_path)
    shutil.rmtree(partial, ignore_errors=True)
    return record


def _train_entry(spec: SuiteSpec, name: str, mode: str) -> TrainSpec:
    if mode not in TRAIN_MODES:
        raise TrainingError(f"unknown training mode {mode!r}", fix=f"use one of: {', '.join(TRAIN_MODES)}")
    if name not in spec.train:
        raise TrainingError(
            f"suite '{spec.name}' defines no adapter '{name}'",
            path=spec.path,
            fix=f"adapters in its `train:` section: {', '.join(spec.train) or 'none'}",
        )
    return spec.train[name]


def _base_model(spec: SuiteSpec, notify: Callable[[str], None] | None) -> Any:
    """The suite's model, resolved (converted once when it is the embedded default); errors at `model:`."""
    try:
        return resolve_model(
            spec.model.name, base_dir=spec.path.parent, notify=notify, allow_pickle=spec.model.allow_pickle
        )
    except ModelError as error:
        raise error.located(spec.path, spec.model_line) from None


def _checked(
    training: TrainingSet, test_set: Dataset, why: str, notify: Callable[[str], None] | None
) -> list[DataCheck]:
    """The training data's findings, said before training starts; a serious one stops it here."""
    findings = check_training_data(training, test_set)
    name = training.train.name
    if notify is not None:
        notify(f"adapter '{name}': {why} ({len(training)} rows, {training.train.epochs:g} epochs)")
        for finding in findings:
            notify(f"adapter '{name}': training data: {finding.message}")
    stop_on_serious(training, findings)
    return [DataCheck.model_validate(f.as_dict()) for f in findings]


def _unusable(spec: SuiteSpec, name: str, reason: str | None) -> TrainingError:
    return TrainingError(
        f"adapter '{name}' cannot be used: {reason}",
        path=spec.path,
        line=spec.train[name].line,
        fix=f"train it with `evalkit train {shown_path(spec.path)} --adapter {name}`, or run with --evalkit-train=auto",
    )


def _rows(
    spec: SuiteSpec, name: str, model_path: Path, judged: JudgeTraining | None, test_set: Dataset | None
) -> tuple[TrainingSet, Dataset, tuple[Duplicate, ...]]:
    """Adapter ``name``'s training rows rendered, the golden rows they are checked against, and the
    training rows that repeat one of those (contamination); for a judge adapter (``judged``), its labelled
    verdicts and calibration rows, and a refusal when they share a row."""
    test_set = test_set or load_dataset(spec.dataset_path, id_field=spec.id_field)
    if judged is None:
        training = build_training_set(spec, name, model_path)
        return training, test_set, tuple(find_contamination(training, test_set))
    # a generate-mode judge is read by the last `GRADE: X` it writes: it learns to stop after it
    training = build_training_set(spec, name, model_path, judged.with_target, stops=judged.writes or None)
    test_set = judged.with_target(test_set)
    # a judge calibrated by folds is measured on its own rows, each by a judge trained without it
    shared = () if judged.folds else tuple(find_contamination(training, test_set))
    judged.refuse_shared_rows(name, shared)
    return training, test_set, shared


def ensure_adapter(
    spec: SuiteSpec | str | Path,
    name: str,
    *,
    mode: TrainMode = "auto",
    notify: Callable[[str], None] | None = None,
    progress_bar: bool = False,
    folds: int | None = None,
    callbacks: Sequence[Any] = (),
    test_set: Dataset | None = None,
    reports_dir: Path | None = None,
) -> TrainedAdapter:
    """The adapter ``name`` of a suite, trained first when missing or stale (``auto``), always
    (``always``), or never (``never``: a missing or stale adapter is an error). ``reports_dir``: where the
    entry's ``report_to`` tools write (under ``training/<adapter>/``; default ``./reports``)."""
    spec = spec if isinstance(spec, SuiteSpec) else load_suite(spec)
    train_spec = _train_entry(spec, name, mode)
    judged = None
    if train_spec.judge:  # the suite as its judge sees it: verdicts under the rubric, over the grades
        from evalkit.judge.training import judge_training

        judged = judge_training(spec, name)
        spec = judged.spec
    resolved = _base_model(spec, notify)
    training, test_set, contamination = _rows(spec, name, resolved.path, judged, test_set)
    expected = _expected(training, resolved.fingerprint)

    output = train_spec.output_path
    # Under `torchrun` / `accelerate launch` the launcher coordinates the processes; a file lock would deadlock them.
    distributed = world_size() > 1
    lock = contextlib.nullcontext() if distributed else file_lock(output.parent / f".{output.name}.lock")
    with lock:
        record = read_training_record(output)
        reason = stale_reason(record, output, expected)
        trained_now = mode == "always" or reason is not None
        if trained_now:
            if mode == "never":
                raise _unusable(spec, name, reason)
            why = "retraining on request" if reason is None else f"training it because {reason}"
            checks = _checked(training, test_set, why, notify)
            judge_scale = judged.scale if judged is not None and judged.folds else None
            run = _TrainingRun(notify, progress_bar, folds, callbacks, reports_dir, judge_scale)
            record = _train(training, resolved, expected, run, checks)
    return TrainedAdapter(  # the record read (when current) or just written; None on another process
        name=name,
        path=output,
        training=record,
        trained_now=trained_now,
        contamination=contamination,
        allow_contamination=train_spec.allow_contamination,
    )


def train_adapter(spec: SuiteSpec | str | Path, name: str, **kwargs: Any) -> TrainedAdapter:
    """Train adapter ``name`` of a suite now, whether or not an up-to-date one exists."""
    return ensure_adapter(spec, name, mode="always", **kwargs)

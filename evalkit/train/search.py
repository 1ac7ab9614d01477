"""Hyperparameter search for one adapter, on Optuna: its TPE sampler, its median pruner, its storage.

Each trial trains the adapter with sampled settings and reports the suite's own validation metric after
every epoch, so the pruner can stop a trial that trails the trials before it. The study lives in a
SQLite file in the adapter's partial folder: an interrupted search resumes where it stopped (the trial
that was running is tried again with the same settings), and the folder is removed with the rest of the
partial work once the adapter is published.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from transformers import TrainerCallback

from evalkit.errors import TrainingError
from evalkit.record import SearchBest, SearchTrial, TrainingSearch
from evalkit.spec import SearchRange, SearchSettings, TrainConfig
from evalkit.study import open_stored_study, suggest
from evalkit.train.examples import TrainingSet, kfold_rows, split_rows
from evalkit.train.processes import world_size
from evalkit.train.trainer import fit, selection


def direction(settings: SearchSettings) -> Literal["minimize", "maximize"]:
    return "minimize" if settings.objective == "validation_loss" else "maximize"


def _suggest(trial: Any, name: str, values: SearchRange | list[Any]) -> Any:
    return suggest(trial, name, values)


def open_study(settings: SearchSettings, folder: Path) -> Any:
    """The study stored in ``folder``, created on first use; an unfinished trial is queued again, once."""
    return open_stored_study(
        folder, trials=settings.trials, seed=settings.seed, pruner=settings.pruner, direction=direction(settings)
    )


class _Pruning(TrainerCallback):
    """Reports each epoch's validation metric to the trial, and stops training when the pruner says so."""

    def __init__(self, trial: Any, objective: str) -> None:
        self.trial = trial
        # Accuracy alone: on a small validation set many trials tie, and a tie is not trailing.
        self.key = "eval_loss" if objective == "validation_loss" else "eval_accuracy"
        self.pruned_at: float | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.pruned_at is not None:
            return
        self.trial.report(float(metrics[self.key]), step=round(state.epoch or 0.0))
        if self.trial.should_prune():
            self.pruned_at = state.epoch
            control.should_training_stop = True


@dataclasses.dataclass
class SearchContext:
    """What every trial shares: the training rows, the base model, and where trials may write."""

    training: TrainingSet
    model_path: Path
    work: Path
    notify: Callable[[str], None] | None
    progress_bar: bool
    callbacks: Sequence[Any]
    monitor_dir: Path | None = None  # report_to tools write each trial under trial-<n>/


def _trial_fit(
    context: SearchContext,
    config: TrainConfig,
    label: str,
    split: tuple[list[int], list[int]],
    callbacks: Sequence[Any],
    folder: Path,
) -> Any:
    training = dataclasses.replace(context.training, train=config)
    train_indices, val_indices = split
    try:
        return fit(
            training,
            context.model_path,
            train_indices,
            val_indices,
            folder,
            resume=False,
            notify=context.notify,
            progress_bar=context.progress_bar,
            callbacks=[*context.callbacks, *callbacks],
            label=label,
            monitor_dir=context.monitor_dir / folder.name if context.monitor_dir else None,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # a trial keeps its figures, not its weights


def _objective(context: SearchContext, settings: SearchSettings) -> Callable[[Any], float]:
    import optuna

    base = context.training.train
    rows = len(context.training)

    def objective(trial: Any) -> float:
        params = {name: _suggest(trial, name, values) for name, values in settings.space.items()}
        config = base.with_values(params)
        label = f"{base.name} trial {trial.number + 1}/{settings.trials}"
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        if context.notify is not None:
            context.notify(f"{label}: {shown}")
        started = time.perf_counter()
        pruning = _Pruning(trial, settings.objective)
        if settings.objective == "cv_accuracy":
            value, epochs = _cross_validated(context, config, label, trial, pruning)
        else:
            result = _trial_fit(
                context,
                config,
                label,
                split_rows(rows, config.validation.fraction, config.seed),
                [pruning],
                context.work / f"trial-{trial.number + 1}",
            )
            measured = result.record.epochs
            if settings.objective == "validation_loss":
                value = min(e.val_loss for e in measured)
            else:  # many trials reach the same accuracy on a small validation set: the lower loss wins
                value = max(selection(e.val_accuracy, e.val_loss) for e in measured)
            epochs = [e.model_dump(mode="json") for e in measured]
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
        if pruning.pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", pruning.pruned_at)
            if context.notify is not None:
                context.notify(f"{label}: pruned after epoch {pruning.pruned_at:g} (trails the median trial)")
            raise optuna.TrialPruned()
        if context.notify is not None:
            context.notify(f"{label}: {settings.objective} {value:.4f}")
        return value

    return objective


def _cross_validated(
    context: SearchContext, config: TrainConfig, label: str, trial: Any, pruning: _Pruning
) -> tuple[float, list[dict[str, Any]]]:
    """Mean best validation accuracy over k folds; after each fold the running mean is reported for pruning."""
    folds = config.validation.folds or 3
    accuracies: list[float] = []
    summary = []
    for fold, split in enumerate(kfold_rows(len(context.training), folds, config.seed)):
        result = _trial_fit(
            context,
            config,
            f"{label} fold {fold + 1}/{folds}",
            split,
            [],
            context.work / f"trial-{trial.number + 1}-fold-{fold + 1}",
        )
        epochs = [e.model_dump(mode="json") for e in result.record.epochs]
        accuracies.append(max((e["val_accuracy"] for e in epochs), default=0.0))
        summary.append({"fold": fold + 1, "best_val_accuracy": accuracies[-1], "epochs": epochs})
        mean = sum(accuracies) / len(accuracies)
        trial.report(mean, step=fold + 1)
        if fold + 1 < folds and trial.should_prune():
            pruning.pruned_at = float(fold + 1)
            break
    return sum(accuracies) / len(accuracies), summary


def _trial_record(trial: Any) -> SearchTrial:
    return SearchTrial(
        number=trial.number,
        state=trial.state.name.lower(),
        params=trial.params,
        value=trial.value,
        epochs=trial.user_attrs.get("epochs", []),
        pruned_at_epoch=trial.user_attrs.get("pruned_at_epoch"),
        seconds=trial.user_attrs.get("seconds"),
        retry_of=trial.user_attrs.get("retry_of"),
    )


def search(context: SearchContext, settings: SearchSettings) -> tuple[TrainConfig, TrainingSearch]:
    """Run (or resume) the search; the best trial's settings as a train config, and what the search did."""
    import optuna

    if world_size() > 1:
        raise TrainingError(
            f"adapter '{context.training.train.name}' has a `search:`; a search runs its trials in one process",
            path=context.training.spec.path,
            line=context.training.train.line,
            fix="run `evalkit train SUITE --search` without a launcher, then train on several processes "
            "with the best settings written into the `train:` entry",
        )
    study = open_study(settings, context.work)
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    already = len(study.get_trials(deepcopy=False, states=finished_states))
    if already and context.notify is not None:
        context.notify(f"{context.training.train.name}: resuming the search after {already} finished trials")
    started = time.perf_counter()
    remaining = settings.trials - already
    if remaining > 0:
        study.optimize(_objective(context, settings), n_trials=remaining, catch=())
    trials = [_trial_record(t) for t in study.get_trials(deepcopy=False, states=finished_states)]
    complete = [t for t in trials if t.state == "complete"]
    if not complete:
        raise TrainingError(
            f"adapter '{context.training.train.name}': no search trial completed ({len(trials)} pruned)",
            path=context.training.spec.path,
            line=context.training.train.line,
            fix="run more trials, or use `pruner: none`",
        )
    best = study.best_trial
    record = TrainingSearch(
        objective=settings.objective,
        direction=direction(settings),
        sampler=f"TPESampler(seed={settings.seed})",
        pruner=settings.pruner,
        space={k: v.model_dump() if isinstance(v, SearchRange) else v for k, v in settings.space.items()},
        trials_asked=settings.trials,
        complete=len(complete),
        pruned=len(trials) - len(complete),
        resumed_after=already,
        seconds=round(sum(t.seconds or 0.0 for t in trials), 3),
        seconds_this_run=round(time.perf_counter() - started, 3),
        best=SearchBest(trial=best.number, value=best.value, params=best.params),
        trials=trials,
    )
    return context.training.train.with_values(best.params), record

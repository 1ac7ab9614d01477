"""The Optuna machinery every evalkit search shares (the trainer's and the prompt's): a seeded TPE sampler,
the median pruner, sampling one parameter from a range or a list, and a study stored in SQLite that an
interrupted run resumes. Optuna is imported only when a search runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

STUDY_FILE = "search.db"
STUDY_NAME = "evalkit"


def suggest(trial: Any, name: str, values: Any) -> Any:
    """One value for parameter ``name``: from a list (categorical), or from a range with ``low``, ``high``,
    ``log``, ``step`` and ``integer`` (evalkit.spec.SearchRange)."""
    if isinstance(values, list):
        return trial.suggest_categorical(name, values)
    if values.integer:
        return trial.suggest_int(name, int(values.low), int(values.high), step=int(values.step or 1), log=values.log)
    return trial.suggest_float(name, float(values.low), float(values.high), step=values.step, log=values.log)


def sampler_and_pruner(trials: int, seed: int, pruner: str) -> tuple[Any, Any]:
    """A TPE sampler seeded with ``seed`` and the median pruner (``pruner: none``: no pruning)."""
    import optuna

    # A third of the trials (at most Optuna's own 10) sample at random before TPE models the results.
    startup = min(10, max(2, trials // 3))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if pruner == "none":
        return sampler, optuna.pruners.NopPruner()
    # Judge nothing before two trials have finished, nor before a trial's first step.
    return sampler, optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def open_stored_study(
    folder: Path, *, trials: int, seed: int, pruner: str, direction: Literal["minimize", "maximize"]
) -> Any:
    """The study stored in ``folder``, created on first use. A trial an interrupted run left unfinished
    (failed, or still marked running after a kill) is queued again, once, with its settings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder.mkdir(parents=True, exist_ok=True)
    sampler, pruner_object = sampler_and_pruner(trials, seed, pruner)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=f"sqlite:///{folder / STUDY_FILE}",
        sampler=sampler,
        pruner=pruner_object,
        direction=direction,
        load_if_exists=True,
    )
    state = optuna.trial.TrialState
    stored = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in stored}
    for trial in stored:
        if trial.state == state.RUNNING:  # its process was killed
            study._storage.set_trial_state_values(trial._trial_id, state=state.FAIL)
        if trial.state in (state.RUNNING, state.FAIL) and trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return study


def finished_trials(study: Any) -> list[Any]:
    """The study's completed and pruned trials, in the order they ran."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return list(study.get_trials(deepcopy=False, states=states))

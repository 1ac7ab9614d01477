"""How far a judge can be trusted: the panel grades human-labelled outputs, and its accuracy and Cohen's
kappa against those verdicts are measured (with 95% intervals). Below ``min_agreement`` it is not trusted.
A judge adapter calibrated by folds (``calibration: {folds: k}``) is measured by its training instead: the
held-out folds, pooled."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from evalkit.data import Dataset
from evalkit.errors import shown_path
from evalkit.judge.panel import Panel
from evalkit.judge.readers import Reading
from evalkit.record import Calibration
from evalkit.stats import cohen_kappa, kappa_interval, wilson_interval
from evalkit.tasks import PreparedCandidate, row_label

if TYPE_CHECKING:
    from evalkit.train.adapters import TrainedAdapter


class Agreement(TypedDict):
    """Verdicts measured against the human ones: how many agree, accuracy and kappa with 95% intervals."""

    n: int
    agree: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    kappa: float
    kappa_ci: tuple[float, float]


def agreement(human: Sequence[bool], judged: Sequence[bool]) -> Agreement:
    agree = sum(h == j for h, j in zip(human, judged))
    n = len(human)
    return Agreement(
        n=n,
        agree=agree,
        accuracy=agree / n,
        accuracy_ci=wilson_interval(agree, n),
        kappa=cohen_kappa(human, judged),
        kappa_ci=kappa_interval(human, judged),
    )


def calibrate(prepared: PreparedCandidate, panel: Panel, labelled: Dataset, min_agreement: float | None) -> Calibration:
    """The panel's agreement with the human verdicts of the ``labelled`` rows; trusted when there is no
    ``min_agreement`` or its accuracy reaches it."""
    rows = labelled.rows
    target = prepared.spec.task.target
    with model_time(panel) as judging:
        _, readings = panel.ask(
            [{**row.fields, "target": row.fields.get(target) if target else None} for row in rows],
            [f"{row_label(labelled, row)} (judge rubric)" for row in rows],
            [f"{prepared.spec.name}::judge-calibration::{row.id}::0" for row in rows],
        )
    verdicts = [panel.scale.grade_of(row.fields["verdict"]) for row in rows]
    human = [panel.scale.passes(v) for v in verdicts]
    judged = [score.correct for score in panel.verdicts(readings, [""] * len(rows))]
    measured = agreement(human, judged)
    wrong = [
        {"row": row_label(labelled, row), "human": verdicts[k], "judge": "/".join(str(r[k].grade) for r in readings)}
        for k, row in enumerate(rows)
        if human[k] != judged[k]
    ]
    return Calibration(
        file=shown_path(labelled.path),
        **measured,
        min_agreement=min_agreement,
        wrong=wrong,
        trusted=min_agreement is None or measured["accuracy"] >= min_agreement,
        ms_per_judgement=round(1000 * judging.seconds / len(rows), 2),
        **({"per_judge": _per_judge(panel, human, readings)} if len(readings) > 1 else {}),
    )


def calibration_by_folds(trained: TrainedAdapter, min_agreement: float | None) -> Calibration:
    """A judge adapter's calibration by k-fold cross-validation over its labelled training file: each fold
    graded by the judge trained without it, pooled, with the spread across folds."""
    from evalkit.judge.training import folds_agreement

    record = trained.training
    cross_validation = record.cross_validation if record is not None else None
    if record is None or cross_validation is None or not cross_validation.held_out:
        # the folds are in its content hash: a current judge adapter calibrated by folds has them
        raise TypeError(f"judge adapter '{trained.name}' has no held-out folds in its training record")
    human, judged, spread = folds_agreement(cross_validation)
    measured = agreement(human, judged)
    verdict = {True: "pass", False: "fail"}
    wrong = [
        {"row": row, "human": verdict[h], "judge": verdict[j]}
        for fold in cross_validation.held_out
        for row, h, j in zip(fold.rows, fold.human, fold.judged)
        if h != j
    ]
    data = record.data.path if record.data is not None else "its training data"
    return Calibration(
        file=f"{spread.folds} folds of {data}",
        **measured,
        min_agreement=min_agreement,
        wrong=wrong,
        trusted=min_agreement is None or measured["accuracy"] >= min_agreement,
        folds=spread,
    )


@dataclass
class ModelTime:
    seconds: float = 0.0


@contextlib.contextmanager
def model_time(panel: Panel) -> Iterator[ModelTime]:
    """The judges' model time spent inside the block (answers from the result cache count the time they
    took when computed)."""
    stats = {id(s): s for b in panel.backends if (s := getattr(b, "stats", None)) is not None}.values()
    before = sum(s.compute_s for s in stats)
    measured = ModelTime()
    yield measured
    measured.seconds = sum(s.compute_s for s in stats) - before


def _per_judge(panel: Panel, human: Sequence[bool], readings: Sequence[Sequence[Reading]]) -> list[dict[str, object]]:
    """Each judge's own agreement with the human verdicts (reported beside the panel's)."""
    return [
        {"judge": name, **agreement(human, [panel.scale.passes(r.grade) for r in judge])}
        for name, judge in zip(panel.names, readings)
    ]

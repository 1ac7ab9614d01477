"""A judge trained like any adapter: a `train:` entry with ``judge: true`` is the suite seen as its judge
sees it.

Its rows are labelled verdicts (the row's fields, the ``output`` graded and the human ``verdict``); each is
rendered with the judge's own rubric (``target`` is the suite's target field, as when the judge grades), and
the adapter learns to score the verdict's grade above the others: choice scoring over the grades, the same
as a classify task. The judge's model is the base. Staleness, content hashes, training.json, the search,
the over-fitting watch and the data checks are the trainer's, unchanged. The judge's calibration rows must
not be among the training rows: a judge is measured only on verdicts it has not learnt.

With one labelled file, ``calibration: {folds: k}`` calibrates by k-fold cross-validation: k judges, each
trained without one fold and graded on it (no early stopping or checkpoint choice on the fold it is graded
on), pooled into the judge's agreement and kappa, with their spread across folds; the judge that gates is
then trained on every row.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from evalkit.data import Dataset, Row
from evalkit.errors import TrainingError
from evalkit.record import CrossValidation, FoldsAgreement, HeldOutFold
from evalkit.spec import DatasetConfig, TaskConfig
from evalkit.stats import cohen_kappa

if TYPE_CHECKING:
    from evalkit.judge.settings import Scale
    from evalkit.results import ExampleResult
    from evalkit.spec import SuiteSpec
    from evalkit.train.examples import Duplicate

VERDICT = "verdict"  # the field of a labelled row holding the human grade


@dataclass(frozen=True)
class JudgeTraining:
    """The suite as judge adapter is trained on it (``spec``), what each labelled row needs before the rubric
    renders it (``with_target``), the judge's grades (``scale``) and its calibration folds, if any."""

    spec: SuiteSpec
    with_target: Callable[[Dataset], Dataset]
    scale: Scale
    folds: int | None
    writes: bool  # a generate-mode judge: it learns to write `GRADE: X` and stop
    calibration: str  # the file its calibration rows come from, as the suite names it

    def refuse_shared_rows(self, name: str, shared: Sequence[Duplicate]) -> None:
        """A judge adapter trained on rows of its own calibration file is refused, with the rows named."""
        if not shared:
            return
        more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
        shown = "; ".join(str(d) for d in shared[:5]) + more
        raise TrainingError(
            f"judge adapter '{name}' would be calibrated on {len(shared)} row(s) it is trained on ({shown}): its "
            "agreement would be measured on verdicts it has learnt",
            path=self.spec.path,
            line=self.spec.train[name].line,
            fix=f"remove those rows from the training data or from {self.calibration}",
        )


def judge_training(spec: SuiteSpec, name: str) -> JudgeTraining:
    """The suite as judge adapter ``name`` is trained on it."""
    judge = spec.scorer()
    settings = getattr(judge, "settings", None)
    entry = spec.train[name]
    if settings is None or getattr(settings, "rubric", None) is None:
        raise TrainingError(
            f"adapter '{name}' is a judge adapter (`judge: true`), but the suite's scorer is not a judge",
            path=spec.path,
            line=entry.line,
            fix="grade the suite with `scorer: {name: judge, rubric: ..., adapter: " + name + "}`",
        )
    # a generate-mode judge is read by the last `GRADE: X` it writes, so that is what it learns to write
    prefix = settings.prefix + ("GRADE: " if settings.mode == "generate" else "")
    task = TaskConfig(kind="classify", target=VERDICT, choices=list(settings.grades), choice_prefix=prefix)
    update = {
        "judge": False,
        "prompt": settings.rubric,
        "template": None,
        "chat": settings.chat,
        "system": settings.system,
    }
    if settings.folds is not None:  # k judges for the calibration, then the gating judge on every row
        update["validation"] = entry.validation.model_copy(update={"fraction": 0.0, "folds": settings.folds})
    train = entry.model_copy(update=update).placed(name, spec.path.parent, entry.line)
    # the rows it is measured on: the calibration file, or with folds its own labelled rows, fold by fold
    measured_on = train.data if settings.folds is not None else settings.calibration_file or spec.dataset.path
    dataset = DatasetConfig(path=measured_on, id_field=spec.dataset.id_field)
    judged = spec.model_copy(
        update={"task": task, "train": {**spec.train, name: train}, "model": settings.judges[0], "dataset": dataset}
    )
    judged._scorer = None
    target_field = spec.task.target

    def with_target(rows: Dataset) -> Dataset:
        """Each labelled row with ``target`` (the suite's target field), as the judge's rubric sees it."""
        if target_field is None:
            return rows
        placed = tuple(
            Row({**row.fields, "target": row.fields.get(target_field)}, row.id, row.number, row.line)
            for row in rows.rows
        )
        return Dataset(path=rows.path, rows=placed, content_hash=rows.content_hash)

    return JudgeTraining(judged, with_target, settings.scale, settings.folds, settings.mode == "generate", dataset.path)


def held_out_fold(examples: Sequence[ExampleResult], scale: Scale) -> HeldOutFold:
    """A fold's verdicts from the judge trained without it: the human grade of each row and the judge's
    (the grade it scored highest), each as pass or fail."""
    human = [scale.passes(scale.grade_of(e.target)) for e in examples]
    judged = [scale.passes(e.output) for e in examples]
    agree = sum(h == j for h, j in zip(human, judged))
    return HeldOutFold(
        rows=[e.id for e in examples],
        human=human,
        judged=judged,
        agree=agree,
        accuracy=round(agree / len(examples), 4),
        kappa=round(cohen_kappa(human, judged), 4),
    )


def folds_agreement(cross_validation: CrossValidation) -> tuple[list[bool], list[bool], FoldsAgreement]:
    """The held-out folds pooled (every labelled row's human and judge verdicts), and their spread."""
    folds = cross_validation.held_out or []
    human = [h for fold in folds for h in fold.human]
    judged = [j for fold in folds for j in fold.judged]
    accuracy, kappa = [f.accuracy for f in folds], [f.kappa for f in folds]
    spread = FoldsAgreement(
        folds=len(folds),
        accuracy=accuracy,
        kappa=kappa,
        accuracy_mean=round(statistics.fmean(accuracy), 4),
        accuracy_stdev=round(statistics.stdev(accuracy), 4) if len(folds) > 1 else 0.0,
        kappa_mean=round(statistics.fmean(kappa), 4),
        kappa_stdev=round(statistics.stdev(kappa), 4) if len(folds) > 1 else 0.0,
        trained_on=len(human),
    )
    return human, judged, spread

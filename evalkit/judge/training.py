"""A judge trained like any adapter: a `train:` entry with ``judge: true`` is the suite seen as its judge
sees it.

Its rows are labelled verdicts (the row's fields, the ``output`` graded and the human ``verdict``); each is
rendered with the judge's own rubric (``target`` is the suite's target field, as when the judge grades), and
the adapter learns to score the verdict's grade above the others: choice scoring over the grades, the same
as a classify task. The judge's model is the base. Staleness, content hashes, training.json, the search,
the over-fitting watch and the data checks are the trainer's, unchanged. The judge's calibration rows must
not be among the training rows: a judge is measured only on verdicts it has not learnt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from evalkit.data import Dataset, Row
from evalkit.errors import TrainingError
from evalkit.spec import DatasetConfig, TaskConfig

if TYPE_CHECKING:
    from evalkit.spec import SuiteSpec
    from evalkit.train.examples import Duplicate

VERDICT = "verdict"  # the field of a labelled row holding the human grade


def judge_training(spec: SuiteSpec, name: str) -> tuple[SuiteSpec, Callable[[Dataset], Dataset]]:
    """The suite as judge adapter ``name`` is trained on it, and what each labelled row needs before the
    rubric renders it (its ``target``)."""
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
    task = TaskConfig(kind="classify", target=VERDICT, choices=list(settings.grades), choice_prefix=settings.prefix)
    train = entry.model_copy(
        update={
            "judge": False,
            "prompt": settings.rubric,
            "template": None,
            "chat": settings.chat,
            "system": settings.system,
        }
    ).placed(name, spec.path.parent, entry.line)
    dataset = DatasetConfig(path=settings.calibration or spec.dataset.path, id_field=spec.dataset.id_field)
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

    return judged, with_target


def refuse_shared_rows(spec: SuiteSpec, name: str, shared: list[Duplicate], calibration: str) -> None:
    """A judge adapter trained on rows of its own calibration file is refused, with the rows named."""
    if not shared:
        return
    shown = "; ".join(str(d) for d in shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
    raise TrainingError(
        f"judge adapter '{name}' would be calibrated on {len(shared)} row(s) it is trained on ({shown}): its "
        "agreement would be measured on verdicts it has learnt",
        path=spec.path,
        line=spec.train[name].line,
        fix=f"remove those rows from the training data or from {calibration}",
    )

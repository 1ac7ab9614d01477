"""The files a judge's options name, read when the suite is: the rubric, and the human-labelled calibration
rows. Each problem is reported at the suite's key, or at the file's line."""

from __future__ import annotations

from collections.abc import Set
from pathlib import Path

from evalkit.data import Dataset, load_dataset, printable_path, refused_path
from evalkit.errors import DatasetError, TemplateError, shown_path
from evalkit.judge.settings import Scale
from evalkit.prompts import PromptTemplate
from evalkit.tasks import TaskProblem


def existing(base_dir: Path, relative: str, key: str, what: str) -> Path:
    """``relative`` resolved against the suite's folder; TaskProblem at ``key`` when nothing is there."""
    path = base_dir / relative
    refused = refused_path(path)
    if refused is not None:
        problem, fix = refused
        raise TaskProblem(f"{what} '{printable_path(relative)}' {problem}", "task", "scorer", key, fix=fix)
    if not path.exists():
        raise TaskProblem(
            f"{what} '{relative}' does not exist",
            "task",
            "scorer",
            key,
            fix=f"paths in a suite are relative to the suite file's folder: this one points at {shown_path(path)}",
        )
    return path


def read_rubric(path: Path, shown: Set[str], what: str) -> PromptTemplate:
    """The rubric template at ``path``; it must show the judge the variables ``shown`` (``what`` they hold)."""
    rubric = PromptTemplate.from_file(path)
    missing = sorted(shown - rubric.variables())
    if missing:
        raise TemplateError(
            f"the rubric never shows the judge {' or '.join(f'`{{{{ {m} }}}}`' for m in missing)}, "
            "so every verdict would be about nothing it can see",
            path=path,
            line=1,
            fix=f"add {' and '.join(f'{{{{ {m} }}}}' for m in missing)} where the judge should read {what}",
        )
    return rubric


def read_calibration(path: Path, scale: Scale) -> Dataset:
    """The calibration rows at ``path``: each has the judged ``output`` and a human ``verdict`` on ``scale``."""
    rows = load_dataset(path)
    grades = list(scale.grades)
    for row in rows.rows:
        for name in ("output", "verdict"):
            if name not in row.fields:
                raise DatasetError(
                    f"calibration row has no `{name}`; its fields are: {', '.join(row.fields)}",
                    **rows.where(row),
                    fix="each calibration row holds the judged row's fields, the `output` judged, and the "
                    f"human `verdict` (one of {grades})",
                )
        if not scale.knows(row.fields["verdict"]):
            raise DatasetError(
                f"verdict {row.fields['verdict']!r} is not one of the judge's grades {grades}",
                **rows.where(row),
                fix="write the human verdict as one of the grades",
            )
    if len(rows) < 2:
        raise DatasetError("a calibration set needs at least two labelled rows", path=path)
    return rows

"""The judge scorer's options (``task: scorer: {name: judge, ...}``), checked as the suite is read, and its
scale of grades: which grades pass and what a reading of them scores."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from evalkit.backends.base import ModelConfig, StrictModel
from evalkit.errors import did_you_mean
from evalkit.tasks import TaskProblem


class CalibrationFolds(StrictModel):
    """``calibration: {folds: k}``: a judge adapter's one labelled file (its `train:` data) is split in k
    folds; k judges, each trained without one fold, are graded on it, and the judge that gates is trained
    on every row."""

    folds: int = Field(ge=2, le=20, description="folds of the judge adapter's labelled training file")


class JudgeSettings(StrictModel):
    """The options of the ``judge`` scorer (``task: scorer: {name: judge, ...}``)."""

    model: ModelConfig | None = Field(None, description="the judge: any model block (default: the embedded model)")
    models: list[ModelConfig] | None = Field(None, min_length=2, description="several judges, who vote")
    rubric: str = Field(description="Jinja2 template, relative to the suite; sees the row, `output` and `target`")
    grades: list[str] = Field(
        default_factory=lambda: ["C", "I"], min_length=2, description="the judge's vocabulary; the first is a pass"
    )
    pass_at: float | None = Field(None, description="a numeric scale's lowest passing grade")
    mode: Literal["likelihood", "generate", "pairwise"] = "likelihood"
    read: Literal["likelihood", "generate"] = Field("likelihood", description="how a pairwise judge is read")
    against: str | None = Field(None, description="pairwise: another candidate's name, or `baseline`")
    calibration: str | CalibrationFolds | None = Field(
        None,
        description="human-labelled outputs (rows with `output` and `verdict`), or `{folds: k}` over a judge "
        "adapter's labelled training file",
    )
    min_agreement: float | None = Field(None, ge=0, le=1, description="refuse to gate below this calibration accuracy")
    chat: bool = Field(False, description="send the rubric as the user turn of the judge's chat template")
    system: str | None = Field(None, description="system message when chat is true")
    grade_prefix: str | None = Field(None, description="text before each grade (default: a space; none with chat)")
    max_new_tokens: int = Field(256, ge=1, le=4096, description="generate: the longest reasoning read")
    adapter: str | None = Field(
        None, description="a judge adapter of the suite's `train:` section (`judge: true`) the judge model runs with"
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("models", mode="before")
    @classmethod
    def _models_shorthand(cls, value: Any) -> Any:
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("grades", mode="before")
    @classmethod
    def _grades_as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JudgeSettings:
        folded = [g.casefold().strip() for g in self.grades]
        if any(not g for g in folded):
            raise ValueError("grades must not be empty")
        if len(set(folded)) != len(folded):
            raise ValueError(f"grades {self.grades} repeat a grade (compared without case)")
        if self.model is not None and self.models is not None:
            raise ValueError("name the judge with one of `model:` or `models:`, not both")
        if self.numeric and self.pass_at is None and self.mode != "pairwise":
            raise ValueError("a numeric scale of grades needs `pass_at:` (its lowest passing grade)")
        if self.pass_at is not None and not self.numeric:
            raise ValueError("`pass_at:` applies to a numeric scale of grades only (grades: [1, 2, 3, 4, 5])")
        if self.mode == "pairwise":
            if self.against is None:
                raise ValueError("pairwise mode needs `against:` (another candidate's name, or `baseline`)")
            if len(self.grades) != 2:
                raise ValueError("pairwise mode takes two grades: the first answer is better, the second is")
            if self.calibration is not None:
                raise ValueError("`calibration:` measures a likelihood or generate judge; pairwise mode has none")
        elif self.against is not None:
            raise ValueError("`against:` applies to pairwise mode only")
        if self.min_agreement is not None and self.calibration is None:
            raise ValueError("`min_agreement:` needs `calibration:` (the labelled rows the agreement is measured on)")
        if self.system is not None and not self.chat:
            raise ValueError("`system:` applies only with `chat: true`")
        if self.adapter is not None and (self.models is not None or self.mode == "pairwise"):
            raise ValueError("a judge adapter is trained for one judge grading with its rubric: name one `model:`")
        if self.folds is not None and self.adapter is None:
            raise ValueError(
                "`calibration: {folds: k}` trains a judge per fold: it needs a judge adapter (`adapter:`); "
                "a prompted judge is calibrated on a file of labelled rows"
            )
        return self

    @property
    def folds(self) -> int | None:
        """k of `calibration: {folds: k}` (None when the calibration rows are a file of their own)."""
        return self.calibration.folds if isinstance(self.calibration, CalibrationFolds) else None

    @property
    def calibration_file(self) -> str | None:
        """The file of labelled rows the judge is calibrated on, when it has one."""
        return self.calibration if isinstance(self.calibration, str) else None

    @property
    def numeric(self) -> bool:
        return all(_number(g) is not None for g in self.grades)

    @property
    def reading(self) -> str:
        """How each judge's answer is read: likelihood or generate."""
        return self.read if self.mode == "pairwise" else self.mode

    @property
    def judges(self) -> list[ModelConfig]:
        return list(self.models) if self.models is not None else [self.model or ModelConfig()]

    @property
    def prefix(self) -> str:
        if self.grade_prefix is not None:
            return self.grade_prefix
        return "" if self.chat else " "

    @property
    def scale(self) -> Scale:
        return Scale(tuple(self.grades), self.numeric, self.pass_at)


def parse_settings(options: dict[str, Any]) -> JudgeSettings:
    """The settings a suite's scorer options describe; TaskProblem at the option's key when they are wrong."""
    try:
        return JudgeSettings.model_validate(options)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            known = list(JudgeSettings.model_fields)
            raise TaskProblem(
                f"scorer 'judge' has no option '{loc[0]}'{did_you_mean(loc[0], known)}",
                "task",
                "scorer",
                loc[0],
                fix=f"its options are: {', '.join(known)}",
            ) from None
        where = ".".join(loc)
        raise TaskProblem(
            f"scorer 'judge'{f' {where}' if where else ''}: {error['msg'].removeprefix('Value error, ')}",
            "task",
            "scorer",
            *loc[:1],
        ) from None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Scale:
    """The judge's grades: the first passes, or on a numeric scale every grade from ``pass_at`` up."""

    grades: tuple[str, ...]
    numeric: bool
    pass_at: float | None = None

    def passes(self, grade: str | None) -> bool:
        if grade is None:
            return False
        if self.numeric:
            return float(grade) >= float(self.pass_at or 0)
        return grade == self.grades[0]

    def score(self, grade: str | None, probabilities: dict[str, float] | None) -> float:
        """A reading's score in [0, 1]: the pass grades' probability, or the probability-weighted mean on a
        numeric scale, rescaled; a generated grade (no probabilities) counts as certain."""
        if probabilities is None and grade is None:
            return 0.0  # a judge that gave no grade passes nothing
        probabilities = probabilities or {g: float(g == grade) for g in self.grades}
        if self.numeric:
            values = [float(g) for g in self.grades]
            low, high = min(values), max(values)
            mean = sum(probabilities[g] * float(g) for g in self.grades)
            return (mean - low) / (high - low) if high > low else float(self.passes(grade))
        return sum(p for g, p in probabilities.items() if self.passes(g))

    def grade_of(self, text: object) -> str:
        """The grade ``text`` names, compared without case (a human verdict as a calibration file writes it)."""
        return {g.casefold(): g for g in self.grades}[str(text).casefold()]

    def knows(self, text: object) -> bool:
        """Whether ``text`` is one of the grades, compared without case."""
        return str(text).casefold() in {g.casefold() for g in self.grades}


@dataclass
class Placement:
    """Where the suite writes the scorer, so that errors found while judging name the suite's lines."""

    suite_path: Path | None = None
    line: Callable[..., int | None] = lambda *loc: None

"""Model-graded scoring: a judge model grades each output with a rubric, and is trusted only as far as its
agreement with human verdicts has been measured.

A suite asks for it as its task's scorer (``scorer: {name: judge, ...}``). The rubric is a Jinja2 template
(sandboxed, like every prompt) that sees the row's fields, the ``output`` and the ``target``; the judge is
any model block, run by any backend, and its requests go through the run's result cache like the
candidate's own. It is read in one of two ways:

- ``likelihood``: each grade is scored as a continuation of the rendered rubric (one forward pass, no
  sampling); the most likely grade is the verdict and the grades' probabilities, normalised over the
  grades, give the score (the pass grades' probability, or on a numeric scale the probability-weighted
  mean grade: G-Eval's weighted score, computed exactly);
- ``generate``: the judge writes its reasoning and the *last* ``GRADE: X`` it writes is the verdict, so a
  grade planted in the judged answer, and quoted back, cannot win.

``mode: pairwise`` compares the candidate's output with another candidate's (or the baseline's) on each
row, in both orders; a verdict that follows the position rather than the answer is a tie. With
``calibration:`` the judge first grades human-labelled outputs, and its accuracy and Cohen's kappa against
those verdicts are reported; below ``min_agreement`` the candidate fails instead of being gated by a judge
nobody measured. Several judges (``models:``) vote.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from evalkit.backends.base import Backend, ChoiceRequest, GenerateRequest, ModelConfig, StrictModel
from evalkit.data import Dataset, Row, load_dataset, printable_path, refused_path
from evalkit.errors import DatasetError, ScorerError, TemplateError, did_you_mean, shown_path
from evalkit.prompts import PromptTemplate
from evalkit.scoring import Score, ScorerFactory
from evalkit.stats import cohen_kappa, kappa_interval, wilson_interval
from evalkit.tasks import Graded, ModelGradedScorer, PreparedCandidate, TaskProblem, row_label

PROMPT_TAIL = 240  # characters of the judge's prompt shown beside its verdict
SHOWN_WRONG = 8  # calibration rows named in a refusal


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
    calibration: str | None = Field(None, description="human-labelled outputs (rows with `output` and `verdict`)")
    min_agreement: float | None = Field(None, ge=0, le=1, description="refuse to gate below this calibration accuracy")
    chat: bool = Field(False, description="send the rubric as the user turn of the judge's chat template")
    system: str | None = Field(None, description="system message when chat is true")
    grade_prefix: str | None = Field(None, description="text before each grade (default: a space; none with chat)")
    max_new_tokens: int = Field(256, ge=1, le=4096, description="generate: the longest reasoning read")

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
        return self

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


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Reading:
    """One judge's answer about one prompt: the grade it gave (None when it gave none), the grades'
    probabilities (likelihood), and what it wrote (generate)."""

    grade: str | None
    probabilities: dict[str, float] | None = None
    answer: str = ""


def last_grade(answer: str, grades: Sequence[str]) -> str | None:
    """The last ``GRADE: X`` in ``answer`` whose X is one of ``grades`` (compared without case): a judge
    that quotes a grade planted in the judged answer, then gives its own, is read by its own."""
    by_text = {g.casefold(): g for g in grades}
    alternatives = "|".join(re.escape(g) for g in sorted(grades, key=len, reverse=True))
    found = re.findall(rf"GRADE\s*:\s*[*_`\"'(\[]*({alternatives})(?!\w)(?!\.\d)", answer, re.IGNORECASE)
    return by_text[found[-1].casefold()] if found else None


def grade_probabilities(grades: Sequence[str], logprobs: Sequence[float]) -> dict[str, float]:
    """Each grade's probability, normalised over the grades (a softmax of their log-likelihoods)."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return {g: w / total for g, w in zip(grades, weights)}


def _agreement(human: Sequence[bool], judged: Sequence[bool]) -> dict[str, Any]:
    agree = sum(h == j for h, j in zip(human, judged))
    n = len(human)
    return {
        "n": n,
        "agree": agree,
        "accuracy": agree / n,
        "accuracy_ci": list(wilson_interval(agree, n)),
        "kappa": cohen_kappa(human, judged),
        "kappa_ci": list(kappa_interval(human, judged)),
    }


class Judge(ModelGradedScorer):
    """The ``judge`` scorer of one suite: its settings, rubric and calibration rows, read when the suite is."""

    def __init__(self, settings: JudgeSettings, base_dir: Path) -> None:
        self.settings = settings
        self.base_dir = base_dir
        self.rubric = self._read_rubric(self._existing(settings.rubric, "rubric", "judge rubric"))
        self.calibration = (
            self._read_calibration(self._existing(settings.calibration, "calibration", "calibration file"))
            if settings.calibration
            else None
        )
        self._suite_path: Path | None = None
        self._line: Callable[..., int | None] = lambda *loc: None
        self._calibrated: dict[tuple[str, ...], dict[str, Any]] = {}  # by the judges' fingerprints
        self._tokens_checked: set[str] = set()

    @classmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: Path) -> Judge:
        """The judge a suite's scorer options describe; TaskProblem at the option's key when they are wrong."""
        try:
            settings = JudgeSettings.model_validate(options)
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
        return cls(settings, base_dir)

    # ------------------------------------------------------------------ reading the suite's files

    def _existing(self, relative: str, key: str, what: str) -> Path:
        """``relative`` resolved against the suite's folder; TaskProblem at ``key`` when nothing is there."""
        path = self.base_dir / relative
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

    def _read_rubric(self, path: Path) -> PromptTemplate:
        rubric = PromptTemplate.from_file(path)
        shown = {"output_a", "output_b"} if self.settings.mode == "pairwise" else {"output"}
        missing = sorted(shown - rubric.variables())
        if missing:
            raise TemplateError(
                f"the rubric never shows the judge {' or '.join(f'`{{{{ {m} }}}}`' for m in missing)}, "
                "so every verdict would be about nothing it can see",
                path=path,
                line=1,
                fix=f"add {' and '.join(f'{{{{ {m} }}}}' for m in missing)} where the judge should read "
                + ("the two answers" if self.settings.mode == "pairwise" else "the answer it grades"),
            )
        return rubric

    def _read_calibration(self, path: Path) -> Dataset:
        rows = load_dataset(path)
        by_text = {g.casefold(): g for g in self.settings.grades}
        for row in rows.rows:
            for name in ("output", "verdict"):
                if name not in row.fields:
                    raise DatasetError(
                        f"calibration row has no `{name}`; its fields are: {', '.join(row.fields)}",
                        **rows.where(row),
                        fix="each calibration row holds the judged row's fields, the `output` judged, and the "
                        f"human `verdict` (one of {self.settings.grades})",
                    )
            if str(row.fields["verdict"]).casefold() not in by_text:
                raise DatasetError(
                    f"verdict {row.fields['verdict']!r} is not one of the judge's grades {self.settings.grades}",
                    **rows.where(row),
                    fix="write the human verdict as one of the grades",
                )
        if len(rows) < 2:
            raise DatasetError("a calibration set needs at least two labelled rows", path=path)
        return rows

    def place(self, suite_path: Path, line: Callable[..., int | None]) -> None:
        """Where the suite writes this scorer: errors found while judging name the suite's lines."""
        self._suite_path, self._line = suite_path, line

    def model_blocks(self) -> list[tuple[tuple[str | int, ...], ModelConfig]]:
        """Each judge's model block and its key path under ``task.scorer`` (checked like the suite's model)."""
        if self.settings.models is not None:
            return [(("models", i), m) for i, m in enumerate(self.settings.models)]
        return [(("model",), self.settings.model)] if self.settings.model is not None else []

    def check_candidates(self, names: Sequence[str]) -> None:
        """Pairwise against a candidate: it is one of the suite's."""
        against = self.settings.against
        if against not in (None, "baseline") and against not in names:
            raise ValueError(
                f"pairwise `against: {against}` is not a candidate of this suite{did_you_mean(str(against), names)}; "
                f"candidates are: {', '.join(names)}, or write `baseline`"
            )

    # ------------------------------------------------------------------ asking the judges

    def passes(self, grade: str | None) -> bool:
        if grade is None:
            return False
        if self.settings.numeric:
            return float(grade) >= float(self.settings.pass_at or 0)
        return grade == self.settings.grades[0]

    def _score_of(self, reading: Reading) -> float:
        """A reading's score in [0, 1]: the pass grades' probability, or the probability-weighted mean on a
        numeric scale, rescaled; a generated grade counts as certain."""
        grades = self.settings.grades
        if reading.probabilities is None and reading.grade is None:
            return 0.0  # a judge that gave no grade passes nothing
        probabilities = reading.probabilities or {g: float(g == reading.grade) for g in grades}
        if self.settings.numeric:
            values = [float(g) for g in grades]
            low, high = min(values), max(values)
            mean = sum(probabilities[g] * float(g) for g in grades)
            return (mean - low) / (high - low) if high > low else float(self.passes(reading.grade))
        return sum(p for g, p in probabilities.items() if self.passes(g))

    def _prompt(self, backend: Backend, context: dict[str, Any], label: str) -> str:
        text = self.rubric.render(context, row_label=label)
        if not self.settings.chat:
            return text
        turns = ([{"role": "system", "content": self.settings.system}] if self.settings.system else []) + [
            {"role": "user", "content": text}
        ]
        return backend.apply_chat_template(turns)

    def _check_grade_tokens(self, backend: Backend) -> None:
        """Grades told apart by likelihood must differ in their first token."""
        tokenizer = backend.tokenizer
        if tokenizer is None or backend.fingerprint in self._tokens_checked:
            return
        self._tokens_checked.add(backend.fingerprint)
        first: dict[int, str] = {}
        prefix = self.settings.prefix
        prefix_ids = tokenizer(prefix, add_special_tokens=False).input_ids if prefix else []
        for grade in self.settings.grades:
            ids = tokenizer(prefix + grade, add_special_tokens=False).input_ids
            if prefix_ids and ids[: len(prefix_ids)] == prefix_ids:
                ids = ids[len(prefix_ids) :]  # a tokenizer that splits the space off: compare what follows it
            if ids and ids[0] in first:
                raise ScorerError(
                    f"judge grades {first[ids[0]]!r} and {grade!r} begin with the same token "
                    f"({tokenizer.convert_ids_to_tokens(ids[0])!r}), so likelihood cannot tell them apart",
                    path=self._suite_path,
                    line=self._line("task", "scorer", "grades"),
                    fix="use grades that differ in their first word or letter (C / I, PASS / FAIL, 1-5)",
                )
            if ids:
                first[ids[0]] = grade

    def read(self, backend: Backend, prompts: Sequence[str], origins: Sequence[str]) -> list[Reading]:
        """One judge's reading of each prompt."""
        grades = self.settings.grades
        if self.settings.reading == "likelihood":
            self._check_grade_tokens(backend)
            results = backend.score_choices(
                [
                    ChoiceRequest(p, tuple(self.settings.prefix + g for g in grades), origin=o)
                    for p, o in zip(prompts, origins)
                ]
            )
            readings = []
            for r in results:
                probabilities = grade_probabilities(grades, r.logprobs)
                readings.append(Reading(max(probabilities, key=probabilities.__getitem__), probabilities))
            return readings
        answers = backend.generate(
            [GenerateRequest(p, self.settings.max_new_tokens, (), origin=o) for p, o in zip(prompts, origins)]
        )
        return [Reading(last_grade(a.text, grades), None, a.text) for a in answers]

    def _panel(self, prepared: PreparedCandidate) -> list[Backend]:
        if prepared.services is None:
            raise TypeError("a judge needs the run's scoring services")
        return [prepared.services.backend(model) for model in self.settings.judges]

    def identity(self, backends: Sequence[Backend]) -> str:
        """What every verdict depends on: rubric, grades, the way the judge is read, and each judge model."""
        described = {
            **self.settings.model_dump(exclude={"model", "models", "rubric", "calibration", "min_agreement"}),
            "rubric_sha256": self.rubric.sha256,
            "judges": [b.fingerprint for b in backends],
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ grading a candidate

    def grade(self, prepared: PreparedCandidate, rows: Sequence[int], outputs: Sequence[str]) -> Graded:
        backends = self._panel(prepared)
        if self.settings.mode == "pairwise":
            scores, extra = self._pairwise(prepared, backends, rows, outputs)
        else:
            scores, extra = self._graded(prepared, backends, rows, outputs)
        record = self._record(prepared, backends, extra)
        failures = []
        calibration = record.get("calibration")
        if calibration is not None and not calibration["trusted"]:
            failures.append(self._refusal(calibration))
        return Graded(scores, record, failures)

    def _context(self, prepared: PreparedCandidate, row: Row, output: str, target: Any) -> dict[str, Any]:
        return {**row.fields, "output": output, "target": target}

    def _graded(
        self, prepared: PreparedCandidate, backends: Sequence[Backend], rows: Sequence[int], outputs: Sequence[str]
    ) -> tuple[list[Score], dict[str, Any]]:
        dataset = prepared.dataset
        spec, candidate = prepared.spec, prepared.candidate
        per_backend_prompts = [
            [
                self._prompt(
                    backend,
                    self._context(prepared, dataset.rows[i], output, prepared.gold[i]),
                    f"{row_label(dataset, dataset.rows[i])} (judge rubric)",
                )
                for i, output in zip(rows, outputs)
            ]
            for backend in backends
        ]
        repeat_of = _repeat_numbers(rows)
        origins = [f"{spec.name}::{candidate.name}::{dataset.rows[i].id}::judge{r}" for i, r in zip(rows, repeat_of)]
        readings = [self.read(b, prompts, origins) for b, prompts in zip(backends, per_backend_prompts)]
        scores = [
            self._verdict([panel[k] for panel in readings], per_backend_prompts[0][k]) for k in range(len(outputs))
        ]
        return scores, {"judges_agreement": self._judges_agreement(readings)}

    def _verdict(self, readings: Sequence[Reading], prompt: str) -> Score:
        """The panel's verdict on one output: the majority's pass or fail, the mean score."""
        passed = [self.passes(r.grade) for r in readings]
        votes = sum(passed)
        correct = votes * 2 > len(readings)
        grades = [r.grade for r in readings]
        shown = max(grades, key=lambda g: (grades.count(g), -grades.index(g)))  # the most common, first on ties
        details: dict[str, Any] = {"grade": shown, "prompt_tail": _tail(prompt)}
        first = readings[0]
        if first.probabilities is not None:
            details["probability"] = round(first.probabilities[first.grade or ""], 6) if first.grade else None
            details["probabilities"] = {g: round(p, 6) for g, p in first.probabilities.items()}
        if first.answer:
            details["answer"] = first.answer
        if len(readings) > 1:
            details["verdicts"] = grades
        score = sum(self._score_of(r) for r in readings) / len(readings)
        return Score(score, correct, shown, details)

    def _judges_agreement(self, readings: Sequence[Sequence[Reading]]) -> list[dict[str, Any]]:
        """For several judges: each pair's agreement on pass or fail, with Cohen's kappa."""
        names = [m.name for m in self.settings.judges]
        pairs = []
        for a in range(len(readings)):
            for b in range(a + 1, len(readings)):
                first = [self.passes(r.grade) for r in readings[a]]
                second = [self.passes(r.grade) for r in readings[b]]
                agree = sum(x == y for x, y in zip(first, second))
                pairs.append(
                    {
                        "judges": [names[a], names[b]],
                        "agreement": agree / len(first),
                        "kappa": cohen_kappa(first, second),
                    }
                )
        return pairs

    # ------------------------------------------------------------------ pairwise

    def _pairwise(
        self, prepared: PreparedCandidate, backends: Sequence[Backend], rows: Sequence[int], outputs: Sequence[str]
    ) -> tuple[list[Score], dict[str, Any]]:
        """Each output against the other's answer to the same row, judged in both orders: a win only when
        both orders prefer this candidate's answer, a tie when the verdict follows the position."""
        assert prepared.services is not None
        against = self.settings.against or ""
        dataset = prepared.dataset
        if against == "baseline":
            stored = prepared.services.baseline_outputs()
            others: list[str | None] = [stored.get(row.id) for row in dataset.rows]
        else:
            others = list(prepared.services.outputs_of(against))
        first_grade, second_grade = self.settings.grades
        spec, candidate = prepared.spec, prepared.candidate
        compared = [(k, i) for k, i in enumerate(rows) if others[i] is not None]
        repeat_of = _repeat_numbers(rows)
        outcomes: list[list[float]] = [[] for _ in outputs]
        tails: dict[int, str] = {}
        answers: dict[int, list[str | None]] = {}
        for backend in backends:
            prompts, origins = [], []
            for k, i in compared:
                label = f"{row_label(dataset, dataset.rows[i])} (pairwise rubric)"
                base = {**dataset.rows[i].fields, "target": prepared.gold[i]}
                for order, (a, b) in enumerate(((outputs[k], others[i]), (others[i], outputs[k]))):
                    prompts.append(self._prompt(backend, {**base, "output_a": a, "output_b": b}, label))
                    origins.append(
                        f"{spec.name}::{candidate.name}::{dataset.rows[i].id}::pairwise{repeat_of[k]}.{order}"
                    )
            readings = self.read(backend, prompts, origins)
            for j, (k, _) in enumerate(compared):
                in_order, swapped = readings[2 * j], readings[2 * j + 1]
                won = (in_order.grade == first_grade) + (swapped.grade == second_grade)
                lost = (in_order.grade == second_grade) + (swapped.grade == first_grade)
                outcomes[k].append(1.0 if won == 2 else 0.0 if lost == 2 else 0.5)
                tails.setdefault(k, _tail(prompts[2 * j]))
                answers.setdefault(k, []).extend([in_order.grade, swapped.grade])
        scores = []
        counts = {"wins": 0, "ties": 0, "losses": 0, "position_ties": 0, "not_compared": 0}
        for k, per_judge in enumerate(outcomes):
            if not per_judge:
                counts["not_compared"] += 1
                scores.append(Score(0.5, False, "not compared", {"grade": "not compared"}))
                continue
            value = sum(per_judge) / len(per_judge)
            outcome = "win" if value > 0.5 else "loss" if value < 0.5 else "tie"
            counts[{"win": "wins", "loss": "losses", "tie": "ties"}[outcome]] += 1
            grades = answers[k]
            if outcome == "tie" and any(g is not None for g in grades) and grades[0] == grades[1]:
                counts["position_ties"] += 1  # both orders named the same position: its bias, not a verdict
            scores.append(
                Score(value, value > 0.5, outcome, {"grade": outcome, "orders": grades, "prompt_tail": tails[k]})
            )
        return scores, {"pairwise": {"against": against, **counts}}

    # ------------------------------------------------------------------ calibration

    def _calibrate(self, prepared: PreparedCandidate, backends: Sequence[Backend]) -> dict[str, Any] | None:
        """The panel's agreement with the human verdicts of the calibration rows (once per set of judges)."""
        if self.calibration is None:
            return None
        key = tuple(b.fingerprint for b in backends)
        if key in self._calibrated:
            return self._calibrated[key]
        rows = self.calibration.rows
        target = prepared.spec.task.target
        origins = [f"{prepared.spec.name}::judge-calibration::{row.id}::0" for row in rows]
        readings = []
        for backend in backends:
            prompts = [
                self._prompt(
                    backend,
                    {**row.fields, "target": row.fields.get(target) if target else None},
                    f"{row_label(self.calibration, row)} (judge rubric)",
                )
                for row in rows
            ]
            readings.append(self.read(backend, prompts, origins))
        human = [self.passes(self._human_grade(row)) for row in rows]
        panel = [self._verdict([r[k] for r in readings], "").correct for k in range(len(rows))]
        result = {
            "file": shown_path(self.calibration.path),
            **_agreement(human, panel),
            "min_agreement": self.settings.min_agreement,
            "wrong": [
                {
                    "row": row_label(self.calibration, row),
                    "human": self._human_grade(row),
                    "judge": "/".join(str(r[k].grade) for r in readings),
                }
                for k, row in enumerate(rows)
                if human[k] != panel[k]
            ],
        }
        if len(backends) > 1:
            names = [m.name for m in self.settings.judges]
            result["per_judge"] = [
                {"judge": name, **_agreement(human, [self.passes(r.grade) for r in judge_readings])}
                for name, judge_readings in zip(names, readings)
            ]
        minimum = self.settings.min_agreement
        result["trusted"] = minimum is None or result["accuracy"] >= minimum
        self._calibrated[key] = result
        return result

    def _human_grade(self, row: Row) -> str:
        by_text = {g.casefold(): g for g in self.settings.grades}
        return by_text[str(row.fields["verdict"]).casefold()]

    def _refusal(self, calibration: dict[str, Any]) -> str:
        lo, hi = calibration["accuracy_ci"]
        k_lo, k_hi = calibration["kappa_ci"]
        wrong = calibration["wrong"]
        named = ", ".join(f"{w['row']} (human {w['human']}, judge {w['judge']})" for w in wrong[:SHOWN_WRONG])
        more = f" and {len(wrong) - SHOWN_WRONG} more" if len(wrong) > SHOWN_WRONG else ""
        return (
            f"the judge agrees with the human verdicts of {calibration['file']} on {calibration['agree']} of "
            f"{calibration['n']} rows ({calibration['accuracy']:.3f}, 95% CI {lo:.2f}-{hi:.2f}; Cohen's kappa "
            f"{calibration['kappa']:.2f} [{k_lo:.2f}, {k_hi:.2f}]), below min_agreement "
            f"{calibration['min_agreement']:.2f}: its verdicts cannot gate this candidate. It got wrong: {named}{more}. "
            "Use a stronger judge model, sharpen the rubric, or grade with a scorer that needs no judge"
        )

    def _record(
        self, prepared: PreparedCandidate, backends: Sequence[Backend], extra: dict[str, Any]
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "mode": self.settings.mode,
            "read": self.settings.reading,
            "grades": self.settings.grades,
            "pass": self.settings.pass_at if self.settings.numeric else self.settings.grades[0],
            "rubric": shown_path(self.rubric.path) if self.rubric.path else None,
            "rubric_sha256": self.rubric.sha256,
            "judges": [{"name": m.name, "fingerprint": b.fingerprint} for m, b in zip(self.settings.judges, backends)],
            "sha256": self.identity(backends),
        }
        record.update({k: v for k, v in extra.items() if v})
        calibration = self._calibrate(prepared, backends)
        if calibration is not None:
            record["calibration"] = calibration
        return record


def _repeat_numbers(rows: Sequence[int]) -> list[int]:
    """For each position of ``rows`` (row indices, repeated once per sample), which sample of its row it is."""
    seen: dict[int, int] = {}
    numbers = []
    for i in rows:
        numbers.append(seen.get(i, 0))
        seen[i] = numbers[-1] + 1
    return numbers


def _tail(prompt: str) -> str:
    return prompt if len(prompt) <= PROMPT_TAIL else "…" + prompt[-PROMPT_TAIL:]


def judge_scorer(*, base_dir: Path | None = None, **options: Any) -> Judge:
    """The ``judge`` scorer's factory: the suite's options, its folder for the rubric and calibration files."""
    return Judge.from_options(options, base_dir=base_dir or Path.cwd())


JUDGE = ScorerFactory(
    judge_scorer, needs_target=False, model_graded=True
)  # published under the evalkit.scorers entry points

"""The two ways a judge's answer about a prompt is read.

- :class:`LikelihoodReader`: each grade is scored as a continuation of the prompt (one forward pass, no
  sampling); the most likely grade is the verdict, and the grades' probabilities, normalised over the
  grades, give the score;
- :class:`GenerateReader`: the judge writes its reasoning and the *last* ``GRADE: X`` it writes is the
  verdict, so a grade planted in the judged answer, and quoted back, cannot win.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from evalkit.backends.base import Backend, ChoiceRequest, GenerateRequest
from evalkit.errors import ScorerError
from evalkit.judge.settings import JudgeSettings, Placement


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


class Reader(ABC):
    """How one judge model's answers are asked for and read."""

    def __init__(self, grades: Sequence[str]) -> None:
        self.grades = list(grades)

    @abstractmethod
    def read(self, backend: Backend, prompts: Sequence[str], origins: Sequence[str]) -> list[Reading]:
        """The judge's reading of each prompt (``origins`` name each request in the result cache)."""


class LikelihoodReader(Reader):
    """The most likely grade, each grade scored as a continuation of the prompt after ``prefix``."""

    def __init__(self, grades: Sequence[str], prefix: str, placement: Placement) -> None:
        super().__init__(grades)
        self.prefix = prefix
        self.placement = placement
        self._tokens_checked: set[str] = set()  # the fingerprints of the judges whose tokenizer was checked

    def read(self, backend: Backend, prompts: Sequence[str], origins: Sequence[str]) -> list[Reading]:
        self._check_grade_tokens(backend)
        continuations = tuple(self.prefix + g for g in self.grades)
        results = backend.score_choices([ChoiceRequest(p, continuations, origin=o) for p, o in zip(prompts, origins)])
        readings = []
        for r in results:
            probabilities = grade_probabilities(self.grades, r.logprobs)
            readings.append(Reading(max(probabilities, key=probabilities.__getitem__), probabilities))
        return readings

    def _check_grade_tokens(self, backend: Backend) -> None:
        """Grades told apart by likelihood must differ in their first token."""
        tokenizer = backend.tokenizer
        if tokenizer is None or backend.fingerprint in self._tokens_checked:
            return
        self._tokens_checked.add(backend.fingerprint)
        first: dict[int, str] = {}
        prefix_ids = tokenizer(self.prefix, add_special_tokens=False).input_ids if self.prefix else []
        for grade in self.grades:
            ids = tokenizer(self.prefix + grade, add_special_tokens=False).input_ids
            if prefix_ids and ids[: len(prefix_ids)] == prefix_ids:
                ids = ids[len(prefix_ids) :]  # a tokenizer that splits the space off: compare what follows it
            if ids and ids[0] in first:
                raise ScorerError(
                    f"judge grades {first[ids[0]]!r} and {grade!r} begin with the same token "
                    f"({tokenizer.convert_ids_to_tokens(ids[0])!r}), so likelihood cannot tell them apart",
                    path=self.placement.suite_path,
                    line=self.placement.line("task", "scorer", "grades"),
                    fix="use grades that differ in their first word or letter (C / I, PASS / FAIL, 1-5)",
                )
            if ids:
                first[ids[0]] = grade


class GenerateReader(Reader):
    """The last ``GRADE: X`` the judge writes in at most ``max_new_tokens``."""

    def __init__(self, grades: Sequence[str], max_new_tokens: int) -> None:
        super().__init__(grades)
        self.max_new_tokens = max_new_tokens

    def read(self, backend: Backend, prompts: Sequence[str], origins: Sequence[str]) -> list[Reading]:
        answers = backend.generate(
            [GenerateRequest(p, self.max_new_tokens, (), origin=o) for p, o in zip(prompts, origins)]
        )
        return [Reading(last_grade(a.text, self.grades), None, a.text) for a in answers]


def reader_for(settings: JudgeSettings, placement: Placement) -> Reader:
    """The reader the settings ask for (``mode:``, or ``read:`` in pairwise mode)."""
    if settings.reading == "likelihood":
        return LikelihoodReader(settings.grades, settings.prefix, placement)
    return GenerateReader(settings.grades, settings.max_new_tokens)

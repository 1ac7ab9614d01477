"""The judges asked about one candidate: each renders the rubric (through its own chat template when the
judge is a chat model), is read the same way, and on each output the majority's verdict stands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from evalkit.backends.base import Backend
from evalkit.judge.readers import Reader, Reading
from evalkit.judge.settings import Scale
from evalkit.prompts import PromptTemplate
from evalkit.scoring import Score
from evalkit.stats import cohen_kappa

PROMPT_TAIL = 240  # characters of the judge's prompt shown beside its verdict


class PairAgreement(TypedDict):
    """How often two judges of a panel agree on pass or fail, with Cohen's kappa."""

    judges: list[str]
    agreement: float
    kappa: float


@dataclass(frozen=True)
class Prompting:
    """How the rubric becomes a judge's prompt: rendered, then sent as a chat's user turn when ``chat``."""

    rubric: PromptTemplate
    chat: bool = False
    system: str | None = None

    def prompt(self, backend: Backend, context: Mapping[str, Any], label: str) -> str:
        text = self.rubric.render(dict(context), row_label=label)
        if not self.chat:
            return text
        turns = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": text}
        ]
        return backend.apply_chat_template(turns)


@dataclass(frozen=True)
class Panel:
    """One or more judge models (``names``, each behind ``backends``) who vote."""

    names: list[str]
    backends: list[Backend]
    prompting: Prompting
    reader: Reader
    scale: Scale

    def ask(
        self, contexts: Sequence[Mapping[str, Any]], labels: Sequence[str], origins: Sequence[str]
    ) -> tuple[list[list[str]], list[list[Reading]]]:
        """Each judge's prompt for each context, and its reading of them (per judge, in context order)."""
        prompts = [
            [self.prompting.prompt(backend, context, label) for context, label in zip(contexts, labels)]
            for backend in self.backends
        ]
        return prompts, [self.reader.read(b, p, origins) for b, p in zip(self.backends, prompts)]

    def verdict(self, readings: Sequence[Reading], prompt: str) -> Score:
        """The panel's verdict on one output: the majority's pass or fail, the mean score."""
        votes = sum(self.scale.passes(r.grade) for r in readings)
        grades = [r.grade for r in readings]
        shown = max(grades, key=lambda g: (grades.count(g), -grades.index(g)))  # the most common, first on ties
        details: dict[str, Any] = {"grade": shown, "prompt_tail": tail(prompt)}
        first = readings[0]
        if first.probabilities is not None:
            details["probability"] = round(first.probabilities[first.grade or ""], 6) if first.grade else None
            details["probabilities"] = {g: round(p, 6) for g, p in first.probabilities.items()}
        if first.answer:
            details["answer"] = first.answer
        if len(readings) > 1:
            details["verdicts"] = grades
        score = sum(self.scale.score(r.grade, r.probabilities) for r in readings) / len(readings)
        return Score(score, votes * 2 > len(readings), shown, details)

    def verdicts(self, readings: Sequence[Sequence[Reading]], prompts: Sequence[str]) -> list[Score]:
        """The verdict on each output, from every judge's readings (``readings[judge][output]``)."""
        return [self.verdict([judge[k] for judge in readings], prompt) for k, prompt in enumerate(prompts)]

    def agreement(self, readings: Sequence[Sequence[Reading]]) -> list[PairAgreement]:
        """For several judges: each pair's agreement on pass or fail, with Cohen's kappa."""
        passed = [[self.scale.passes(r.grade) for r in judge] for judge in readings]
        pairs = []
        for a in range(len(passed)):
            for b in range(a + 1, len(passed)):
                agree = sum(x == y for x, y in zip(passed[a], passed[b]))
                pairs.append(
                    PairAgreement(
                        judges=[self.names[a], self.names[b]],
                        agreement=agree / len(passed[a]),
                        kappa=cohen_kappa(passed[a], passed[b]),
                    )
                )
        return pairs


def tail(prompt: str) -> str:
    """The end of a judge's prompt, as shown beside its verdict."""
    return prompt if len(prompt) <= PROMPT_TAIL else "…" + prompt[-PROMPT_TAIL:]

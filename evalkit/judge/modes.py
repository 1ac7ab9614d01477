"""What a judge is asked about a candidate's outputs: to grade each one with the rubric
(:class:`RubricJudging`), or to compare it with another answer to the same row, in both orders
(:class:`PairwiseJudging`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from evalkit.judge.panel import PairAgreement, Panel, tail
from evalkit.scoring import Score
from evalkit.tasks import PreparedCandidate, row_label


@dataclass
class PairwiseCounts:
    """How a candidate's answers came out against the other's."""

    against: str
    wins: int = 0
    ties: int = 0
    losses: int = 0
    position_ties: int = 0  # ties where the verdict followed the position
    not_compared: int = 0  # rows the other has no answer for

    def count(self, outcome: str, orders: Sequence[str | None]) -> None:
        """One row's outcome (win, loss or tie), from the grades its two orders were given."""
        if outcome == "win":
            self.wins += 1
        elif outcome == "loss":
            self.losses += 1
        else:
            self.ties += 1
            if any(g is not None for g in orders) and orders[0] == orders[1]:
                self.position_ties += 1  # both orders named the same position: its bias, not a verdict


@dataclass
class Judged:
    """A mode's work on one candidate: a score per output, and what the run record keeps of it."""

    scores: list[Score]
    judges_agreement: list[PairAgreement] = field(default_factory=list)
    pairwise: PairwiseCounts | None = None


class JudgingMode(ABC):
    """What the judges are asked about each output, and what the rubric must show them for it."""

    shown: frozenset[str]  # the variables every rubric of this mode shows
    what: str  # what those variables hold, as a fix names it

    @abstractmethod
    def judge(self, prepared: PreparedCandidate, panel: Panel, rows: Sequence[int], outputs: Sequence[str]) -> Judged:
        """Judge ``outputs[k]``, the answer to row ``rows[k]`` of ``prepared``."""


def repeat_numbers(rows: Sequence[int]) -> list[int]:
    """For each position of ``rows`` (row indices, repeated once per sample), which sample of its row it is."""
    seen: dict[int, int] = {}
    numbers = []
    for i in rows:
        numbers.append(seen.get(i, 0))
        seen[i] = numbers[-1] + 1
    return numbers


class RubricJudging(JudgingMode):
    """Each output graded on its own; with several judges, they vote."""

    shown = frozenset({"output"})
    what = "the answer it grades"

    def judge(self, prepared: PreparedCandidate, panel: Panel, rows: Sequence[int], outputs: Sequence[str]) -> Judged:
        dataset, spec, candidate = prepared.dataset, prepared.spec, prepared.candidate
        contexts = [
            {**dataset.rows[i].fields, "output": output, "target": prepared.gold[i]} for i, output in zip(rows, outputs)
        ]
        labels = [f"{row_label(dataset, dataset.rows[i])} (judge rubric)" for i in rows]
        origins = [
            f"{spec.name}::{candidate.name}::{dataset.rows[i].id}::judge{r}" for i, r in zip(rows, repeat_numbers(rows))
        ]
        prompts, readings = panel.ask(contexts, labels, origins)
        return Judged(panel.verdicts(readings, prompts[0]), judges_agreement=panel.agreement(readings))


class PairwiseJudging(JudgingMode):
    """Each output against the other's answer to the same row, judged in both orders: a win only when both
    orders prefer this candidate's answer, a tie when the verdict follows the position. ``grades``: the first
    says the first answer is better, the second that the second is."""

    shown = frozenset({"output_a", "output_b"})
    what = "the two answers"

    def __init__(self, against: str, grades: Sequence[str]) -> None:
        self.against = against
        self.first_grade, self.second_grade = grades

    def judge(self, prepared: PreparedCandidate, panel: Panel, rows: Sequence[int], outputs: Sequence[str]) -> Judged:
        others = self._others(prepared)
        compared = [(k, i) for k, i in enumerate(rows) if others[i] is not None]
        dataset, spec, candidate = prepared.dataset, prepared.spec, prepared.candidate
        repeat_of = repeat_numbers(rows)
        contexts, labels, origins = [], [], []
        for k, i in compared:
            base = {**dataset.rows[i].fields, "target": prepared.gold[i]}
            for order, (a, b) in enumerate(((outputs[k], others[i]), (others[i], outputs[k]))):
                contexts.append({**base, "output_a": a, "output_b": b})
                labels.append(f"{row_label(dataset, dataset.rows[i])} (pairwise rubric)")
                origins.append(f"{spec.name}::{candidate.name}::{dataset.rows[i].id}::pairwise{repeat_of[k]}.{order}")
        prompts, readings = panel.ask(contexts, labels, origins)
        outcomes: list[list[float]] = [[] for _ in outputs]
        orders: dict[int, list[str | None]] = {}
        for judge in readings:
            for j, (k, _) in enumerate(compared):
                in_order, swapped = judge[2 * j], judge[2 * j + 1]
                outcomes[k].append(self._outcome(in_order.grade, swapped.grade))
                orders.setdefault(k, []).extend([in_order.grade, swapped.grade])
        tails = {k: tail(prompts[0][2 * j]) for j, (k, _) in enumerate(compared)}
        return self._scores(outcomes, orders, tails)

    def _others(self, prepared: PreparedCandidate) -> list[str | None]:
        """The other's answer to each row of the dataset (None where it has none)."""
        assert prepared.services is not None
        if self.against == "baseline":
            stored = prepared.services.baseline_outputs()
            return [stored.get(row.id) for row in prepared.dataset.rows]
        return list(prepared.services.outputs_of(self.against))

    def _outcome(self, in_order: str | None, swapped: str | None) -> float:
        """One judge's verdict on one row over both orders: 1 a win, 0 a loss, 0.5 a tie."""
        won = (in_order == self.first_grade) + (swapped == self.second_grade)
        lost = (in_order == self.second_grade) + (swapped == self.first_grade)
        return 1.0 if won == 2 else 0.0 if lost == 2 else 0.5

    def _scores(
        self, outcomes: Sequence[Sequence[float]], orders: dict[int, list[str | None]], tails: dict[int, str]
    ) -> Judged:
        counts = PairwiseCounts(self.against)
        scores = []
        for k, per_judge in enumerate(outcomes):
            if not per_judge:
                counts.not_compared += 1
                scores.append(Score(0.5, False, "not compared", {"grade": "not compared"}))
                continue
            value = sum(per_judge) / len(per_judge)
            outcome = "win" if value > 0.5 else "loss" if value < 0.5 else "tie"
            grades = orders[k]
            counts.count(outcome, grades)
            scores.append(
                Score(value, value > 0.5, outcome, {"grade": outcome, "orders": grades, "prompt_tail": tails[k]})
            )
        return Judged(scores, pairwise=counts)


def mode_for(mode: str, against: str | None, grades: Sequence[str]) -> JudgingMode:
    """The judging a suite's ``mode:`` asks for: pairwise against another, or each output on its own."""
    return PairwiseJudging(against or "", grades) if mode == "pairwise" else RubricJudging()

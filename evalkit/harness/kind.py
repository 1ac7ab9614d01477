"""The task kind of an `lm_eval:` suite. lm-eval builds its requests and scores them
(:mod:`evalkit.harness.run`), so this kind only names it to the rest of evalkit: reports, the baseline
comparison and the run history read an lm-eval example as any other (its output and whether it passed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from evalkit.tasks import TaskKind


class LmEvalKind(TaskKind):
    """An lm-evaluation-harness task; set by a suite's `lm_eval:` section, never written as `task.kind`."""

    name = "lm_eval"
    metrics = ()  # the task's own, known once lm-eval loads it
    per_example = ()

    def row_answers(self, spec: Any, dataset: Any, row: Any) -> NoReturn:
        self._not_here()

    def gold_text(self, spec: Any, dataset: Any, row: Any) -> NoReturn:
        self._not_here()

    def completion(self, spec: Any, prepared: Any, index: int) -> NoReturn:
        self._not_here()

    def score(self, prepared: Any, backend: Any) -> NoReturn:
        self._not_here()

    def predict(self, prepared: Any, backend: Any, rows: Sequence[Any]) -> NoReturn:
        self._not_here()

    def answer_of(self, example: Any) -> str:
        return str(example.output)

    @staticmethod
    def _not_here() -> NoReturn:
        raise TypeError("an lm_eval suite's requests are built and scored by lm-eval (evalkit.harness.run)")

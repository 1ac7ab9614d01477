"""The search: for every selected row, ``tries`` perturbations drawn by Hypothesis (seeded per row) and
predicted in one batched call; for a row whose answer changed, Hypothesis shrinks the change to the
smallest one that still changes it, the rows shrinking concurrently with their model calls pooled."""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from evalkit.record import RobustFlip
from evalkit.robustness.perturb import Change, PerturbedRow, perturbations
from evalkit.robustness.report import RobustnessReport, RowOutcome

Predict = Callable[[list[PerturbedRow]], list[str]]
"""Predictions for a batch of perturbed rows (row id, the row's text fields after a change, the choice order)."""

Answers = dict[tuple[str, tuple], str]  # the answer to each (row id, change key) asked so far


@dataclass(frozen=True)
class SearchRow:
    """A row the search perturbs: its id, the text fields a perturbation may change, the choices it
    offers, and its answer as it is (what a change must keep)."""

    id: str
    fields: dict[str, str]
    choices: list[str] | None
    answer: str

    @classmethod
    def of(cls, row: SearchRow | Sequence[Any]) -> SearchRow:
        """``row`` itself, or the row an ``(id, fields, choices, answer)`` sequence describes."""
        if isinstance(row, SearchRow):
            return row
        row_id, fields, choices, answer = row
        return cls(row_id, fields, choices, answer)

    def changed(self, change: Change) -> PerturbedRow:
        """The row as the model is asked it under ``change``."""
        choices = list(change.choices) if change.choices is not None else self.choices
        return PerturbedRow(self.id, {**self.fields, **dict(change.fields)}, choices)

    def as_list(self) -> list[Any]:
        """``[id, fields, choices, answer]``: the row as a search's cache key holds it."""
        return [self.id, self.fields, self.choices, self.answer]


class _Budget(Exception):
    """Raised inside Hypothesis to stop shrinking once a row has used its model calls."""


def search_fingerprint(names: Sequence[str]) -> dict[str, str]:
    """What the search's behaviour depends on besides its inputs: the perturbations' code and the versions
    of evalkit and Hypothesis (whose draws may change between releases)."""
    import inspect
    from importlib.metadata import version

    from evalkit.version import __version__

    registry = perturbations()
    parts = {"evalkit": __version__, "hypothesis": version("hypothesis")}
    for name in names:
        factory = registry[name].factory
        try:
            code = inspect.getsource(factory)
        except (OSError, TypeError):  # no source to read: fall back to where it lives
            code = f"{getattr(factory, '__module__', '')}.{getattr(factory, '__qualname__', repr(factory))}"
        parts[f"perturbation:{name}"] = hashlib.sha256(code.encode()).hexdigest()
    return parts


def select_rows(rows: Sequence[Any], n: int, seed: int) -> list[Any]:
    """``n`` rows drawn without replacement (seeded), in dataset order."""
    if n >= len(rows):
        return list(rows)
    chosen = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in chosen]


def _settings(tries: int):
    from hypothesis import HealthCheck, Phase, settings

    # report_multiple_bugs=False: Hypothesis otherwise keeps generating after the first flip for as long as
    # 10 seconds allow, which would make the search depend on how fast the model (or the cache) answers.
    return settings(
        max_examples=tries,
        database=None,
        deadline=None,
        report_multiple_bugs=False,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


def search(
    rows: Sequence[SearchRow | Sequence[Any]],
    names: Sequence[str],
    predict: Predict,
    *,
    tries: int,
    seed: int,
    shrink_calls: int = 64,
) -> RobustnessReport:
    """For each row (a :class:`SearchRow`, or its ``(id, fields, choices, answer)``), look for a change of
    the answer.

    ``predict`` maps a batch of :class:`PerturbedRow` to predictions (labels, or normalised outputs for
    generate tasks). All rows' tries are predicted in one batch; only shrinking a flipped row calls it
    one change at a time, at most ``shrink_calls`` times per row."""
    from hypothesis import strategies as st

    started = time.perf_counter()
    registry = perturbations()
    report = RobustnessReport(list(names), tries, seed)
    searched = [SearchRow.of(row) for row in rows]
    strategies = {
        row.id: st.one_of([registry[name].factory(row.fields, row.choices) for name in names]) for row in searched
    }
    drawn = {row.id: _draw(strategies[row.id], tries, seed, row.id) for row in searched}
    answers = _predict_drawn(searched, drawn, predict, report)
    flipped_rows = [row for row in searched if any(answers[(row.id, c.key)] != row.answer for c in drawn[row.id])]
    shrunk = _shrink_all(
        flipped_rows, strategies, answers, predict, tries=tries, seed=seed, shrink_calls=shrink_calls, report=report
    )
    for row in searched:
        smallest, calls = shrunk.get(row.id, (None, 0))
        report.calls += calls
        report.rows.append(_outcome(row, smallest, calls, answers))
    report.wall_s = time.perf_counter() - started
    return report


def _draw(strategy: Any, tries: int, seed: int, row_id: str) -> list[Change]:
    """1. A row's tries, generated by Hypothesis (seeded per row) without calling the model."""
    from hypothesis import find
    from hypothesis.errors import NoSuchExample

    seen: list[Change] = []

    def record(change: Change) -> bool:
        seen.append(change)
        return False

    with contextlib.suppress(NoSuchExample):
        find(strategy, record, settings=_settings(tries), random=_random(seed, row_id))
    return seen


def _predict_drawn(
    rows: Sequence[SearchRow], drawn: dict[str, list[Change]], predict: Predict, report: RobustnessReport
) -> Answers:
    """2. Every row's tries predicted in one batch: the answer to each (row id, change key)."""
    answers: Answers = {}
    keys: list[tuple[str, tuple]] = []
    batch: list[PerturbedRow] = []
    for row in rows:
        for change in drawn[row.id]:
            if (row.id, change.key) not in answers:
                answers[(row.id, change.key)] = ""  # placeholder, filled below
                keys.append((row.id, change.key))
                batch.append(row.changed(change))
    if batch:
        predictions = predict(batch)
        report.calls += len(batch)
        answers.update(zip(keys, predictions))
    return answers


def _shrink_all(
    flipped_rows: list[SearchRow],
    strategies: dict[str, Any],
    answers: Answers,
    predict: Predict,
    *,
    tries: int,
    seed: int,
    shrink_calls: int,
    report: RobustnessReport,
) -> dict[str, tuple[Change | None, int]]:
    """3. Rows whose answer changed: replay each row's search (answered from the batch) and shrink it.
    The rows shrink concurrently, one thread each, and their model calls are pooled into batches."""
    batcher = _Batcher(predict, len(flipped_rows))
    shrunk: dict[str, tuple[Change | None, int]] = {}
    if flipped_rows:
        with ThreadPoolExecutor(max_workers=len(flipped_rows), thread_name_prefix="evalkit-shrink") as pool:
            outcomes = pool.map(
                lambda row: _shrink(row, strategies[row.id], answers, batcher, tries, seed, shrink_calls), flipped_rows
            )
            for row, outcome in zip(flipped_rows, outcomes):
                shrunk[row.id] = outcome
    report.batches = batcher.batches
    return shrunk


def _shrink(
    row: SearchRow, strategy: Any, answers: Answers, batcher: _Batcher, tries: int, seed: int, shrink_calls: int
) -> tuple[Change | None, int]:
    """One flipped row's search replayed and shrunk: its smallest flipping change, and the model calls it made."""
    from hypothesis import find
    from hypothesis.errors import NoSuchExample

    state: dict[str, Any] = {"calls": 0, "smallest": None}

    def flips(change: Change) -> bool:
        key = (row.id, change.key)
        if key not in answers:
            if state["calls"] >= shrink_calls:
                raise _Budget
            state["calls"] += 1
            answers[key] = batcher.ask(row.changed(change))
        changed = answers[key] != row.answer
        if changed:
            state["smallest"] = change
        return changed

    try:
        smallest = find(strategy, flips, settings=_settings(tries), random=_random(seed, row.id))
    except (_Budget, NoSuchExample):  # out of calls: keep the smallest change found so far
        smallest = state["smallest"]
    finally:
        batcher.leave()
    return smallest, state["calls"]


def _outcome(row: SearchRow, smallest: Change | None, calls: int, answers: Answers) -> RowOutcome:
    if smallest is None:
        return RowOutcome(row.id, held=True)
    perturbed = row.changed(smallest)
    return RowOutcome(
        row.id,
        held=False,
        flip=RobustFlip(
            id=row.id,
            kind=smallest.kind,
            change=smallest.description,
            original=dict(row.fields),
            perturbed={k: perturbed.fields[k] for k, _ in smallest.fields},
            choices=list(row.choices) if row.choices else None,
            perturbed_choices=list(smallest.choices) if smallest.choices else None,
            before=row.answer,
            after=answers[(row.id, smallest.key)],
            shrink_calls=calls,
        ),
    )


class _Batcher:
    """Pools the model calls of rows that shrink concurrently: a batch runs once every row still
    shrinking is waiting for an answer, so each shrink step of all rows costs one batched call."""

    def __init__(self, predict: Predict, rows: int) -> None:
        self.predict = predict
        self.active = rows
        self.pending: dict[int, PerturbedRow] = {}
        self.answers: dict[int, str] = {}
        self.error: BaseException | None = None
        self.batches: list[int] = []
        self.ticket = 0
        self.condition = threading.Condition()

    def ask(self, request: PerturbedRow) -> str:
        with self.condition:
            self.ticket += 1
            ticket = self.ticket
            self.pending[ticket] = request
            self._run_when_all_wait()
            while ticket not in self.answers and self.error is None:
                self.condition.wait()
            if self.error is not None:
                raise self.error
            return self.answers.pop(ticket)

    def leave(self) -> None:
        with self.condition:
            self.active -= 1
            self._run_when_all_wait()

    def _run_when_all_wait(self) -> None:
        if not self.pending or len(self.pending) < self.active:
            return
        batch, self.pending = self.pending, {}
        self.batches.append(len(batch))
        try:
            predictions = self.predict(list(batch.values()))
        except BaseException as error:  # every waiting row re-raises it
            self.error = error
            self.condition.notify_all()
            raise
        self.answers.update(zip(batch, predictions))
        self.condition.notify_all()


def _random(seed: int, row_id: str) -> random.Random:
    """Each row's own generator: its tries do not depend on which other rows were selected."""
    return random.Random(f"{seed}:{row_id}")

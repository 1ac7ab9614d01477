"""Robustness: does a candidate keep its answer when a row is changed in ways a user would call harmless?

Each perturbation is a Hypothesis strategy over a row's input text (or its choice order). For every
selected row, evalkit draws ``tries`` perturbations (Hypothesis's generation, seeded), scores them in
one batched backend call, and, for a row whose answer changed, lets Hypothesis shrink the change to
the smallest one that still changes it: typically one character. The metric is ``invariance``, the
share of rows whose answer held under every try.

Custom perturbations: ``@register_perturbation("name")`` on a function ``(fields, choices) ->
SearchStrategy[Change]``, or the same function published under the entry-point group
``evalkit.perturbations``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import string
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from evalkit.cache import CachedBackend, KeyParts
from evalkit.data import canonical_json
from evalkit.errors import DatasetError, did_you_mean
from evalkit.registry import Registry
from evalkit.results import ExampleResult
from evalkit.tasks import PreparedCandidate

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

ENTRY_POINT_GROUP = "evalkit.perturbations"


@dataclass(frozen=True)
class Change:
    """One perturbed version of a row: its text fields after the change, and the choice order shown."""

    kind: str
    fields: tuple[tuple[str, str], ...]  # (field, new text) for the fields that changed
    choices: tuple[str, ...] | None
    description: str

    @property
    def key(self) -> tuple:
        return (self.fields, self.choices)


PerturbationFactory = Callable[[dict[str, str], "list[str] | None"], "SearchStrategy[Change]"]


@dataclass(frozen=True)
class Perturbation:
    name: str
    factory: PerturbationFactory
    promise: str  # what it may change, for the docs and the report
    needs_choices: bool = False


def _as_perturbation(name: str, loaded: object) -> Perturbation:
    if isinstance(loaded, Perturbation):
        return loaded
    return Perturbation(name, loaded, (getattr(loaded, "__doc__", None) or "").strip())  # type: ignore[arg-type]


PERTURBATIONS: Registry[Perturbation] = Registry(
    "perturbation", ENTRY_POINT_GROUP, adapt=_as_perturbation, instance_of=Perturbation
)


def register_perturbation(name: str, *, promise: str = "", needs_choices: bool = False):
    """Decorator: register ``factory(fields, choices) -> SearchStrategy[Change]`` under ``name``."""

    def decorate(factory: PerturbationFactory) -> PerturbationFactory:
        PERTURBATIONS.add(name, Perturbation(name, factory, promise or (factory.__doc__ or "").strip(), needs_choices))
        return factory

    return decorate


def perturbations() -> dict[str, Perturbation]:
    """Every registered perturbation: the built-ins, then those published as entry points."""
    return {name: PERTURBATIONS.get(name) for name in PERTURBATIONS.names()}


def check_perturbations(names: Sequence[str], offers_choices: bool, task_kind: str) -> None:
    """Raise ValueError naming an unknown perturbation (with "did you mean") or a misplaced one."""
    known = perturbations()
    for name in names:
        if name not in known:
            raise ValueError(
                f"unknown perturbation '{name}'{did_you_mean(name, known)}; available: {', '.join(sorted(known))}"
            )
        if known[name].needs_choices and not offers_choices:
            raise ValueError(f"perturbation '{name}' reorders a classify task's choices; this is a {task_kind} task")


# --------------------------------------------------------------------------- built-in perturbations


def _field_and(fields: dict[str, str], inner: Callable[[str, str], SearchStrategy[Change]]):
    """A strategy over the row's text fields (shrinking towards the first), then ``inner(name, text)``."""
    from hypothesis import strategies as st

    names = [name for name, text in fields.items() if text]
    if not names:
        return st.nothing()
    return st.sampled_from(names).flatmap(lambda name: inner(name, fields[name]))


def _positions(text: str, allowed: Callable[[str], bool], max_size: int = 6):
    """Lists of positions in ``text`` whose character passes ``allowed`` (shrinks to one, then earlier)."""
    from hypothesis import strategies as st

    candidates = [i for i, ch in enumerate(text) if allowed(ch)]
    if not candidates:
        return st.nothing()
    return st.lists(st.sampled_from(candidates), min_size=1, max_size=max_size).map(lambda ps: sorted(set(ps)))


def _shown(text: str, at: int) -> str:
    return repr(text[max(0, at - 8) : at + 9])


def _has_other_case(ch: str) -> bool:
    """A letter whose case can flip one for one (not 'ß', whose upper case is 'SS')."""
    other = ch.swapcase()
    return other != ch and len(other) == 1 and other.swapcase() == ch


@register_perturbation(
    "case", promise="changes the case of some letters; the text compared case-insensitively is unchanged"
)
def case_changes(fields: dict[str, str], choices: list[str] | None):
    def inner(name: str, text: str):
        def apply(positions: list[int]) -> Change:
            chars = list(text)
            for p in positions:
                chars[p] = chars[p].swapcase()
            new = "".join(chars)
            where = ", ".join(f"{text[p]!r}->{new[p]!r} at {p}" for p in positions)
            return Change("case", ((name, new),), None, f"case of {len(positions)} letter(s) in {name}: {where}")

        return _positions(text, _has_other_case).map(apply)

    return _field_and(fields, inner)


_SPACES = [" ", "  ", "\n", "\t"]


@register_perturbation(
    "whitespace", promise="inserts spaces, tabs or line breaks; the text without whitespace is unchanged"
)
def whitespace_changes(fields: dict[str, str], choices: list[str] | None):
    from hypothesis import strategies as st

    def inner(name: str, text: str):
        def apply(edits: list[tuple[int, int]]) -> Change:
            chars = list(text)
            for position, kind in sorted(set(edits), reverse=True):
                chars.insert(position, _SPACES[kind])
            shown = ", ".join(f"{_SPACES[k]!r} at {p}" for p, k in sorted(set(edits)))
            return Change("whitespace", ((name, "".join(chars)),), None, f"whitespace in {name}: {shown}")

        edit = st.tuples(st.integers(0, len(text)), st.integers(0, len(_SPACES) - 1))
        return st.lists(edit, min_size=1, max_size=4).map(apply)

    return _field_and(fields, inner)


_KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"
_NEIGHBOURS = {
    ch: "".join(_KEYBOARD[j] for j in (i - 1, i + 1) if 0 <= j < len(_KEYBOARD)) for i, ch in enumerate(_KEYBOARD)
}
_TYPO_OPS = ("swap", "delete", "double", "neighbour")


def apply_typo(text: str, position: int, op: str) -> str:
    """One typo at a letter: swap with the next letter, delete it, double it, or hit a neighbouring key."""
    ch = text[position]
    if op == "swap" and position + 1 < len(text) and text[position + 1].isalpha():
        return text[:position] + text[position + 1] + ch + text[position + 2 :]
    if op == "delete":
        return text[:position] + text[position + 1 :]
    if op == "double":
        return text[:position] + ch + text[position:]
    near = _NEIGHBOURS.get(ch.lower(), "")
    if near:
        sub = near[0].upper() if ch.isupper() else near[0]
        return text[:position] + sub + text[position + 1 :]
    return text[:position] + ch + text[position:]  # no neighbour known: double it


@register_perturbation(
    "typos",
    promise="one to three typos in letters (swap, delete, double, neighbouring key); "
    "each changes at most two adjacent characters",
)
def typo_changes(fields: dict[str, str], choices: list[str] | None):
    from hypothesis import strategies as st

    def inner(name: str, text: str):
        letters = [i for i, ch in enumerate(text) if ch.isalpha()]
        if not letters:
            return st.nothing()

        def apply(edits: list[tuple[int, str]]) -> Change:
            new = text
            for position, op in sorted(set(edits), reverse=True):  # right to left keeps earlier positions valid
                new = apply_typo(new, position, op)
            shown = ", ".join(f"{op} {_shown(text, p)} at {p}" for p, op in sorted(set(edits)))
            return Change("typos", ((name, new),), None, f"typo(s) in {name}: {shown}")

        edit = st.tuples(st.sampled_from(letters), st.sampled_from(_TYPO_OPS))
        return st.lists(edit, min_size=1, max_size=3).map(apply)

    return _field_and(fields, inner)


_PUNCT = set(string.punctuation)


@register_perturbation(
    "punctuation", promise="removes or adds punctuation marks; letters, digits and spaces are unchanged"
)
def punctuation_changes(fields: dict[str, str], choices: list[str] | None):
    from hypothesis import strategies as st

    def inner(name: str, text: str):
        existing = [i for i, ch in enumerate(text) if ch in _PUNCT]
        word_ends = [m.end() for m in re.finditer(r"\w\b", text)] or [len(text)]
        remove = st.sampled_from(existing).map(lambda p: ("remove", p, "")) if existing else st.nothing()
        add = st.tuples(st.just("add"), st.sampled_from(word_ends), st.sampled_from([".", ",", "!", "?", "..."]))

        def apply(edits: list[tuple[str, int, str]]) -> Change:
            chars = list(text)
            # Right to left keeps earlier positions valid; ties in a fixed order (a set's order varies by process).
            for op, position, mark in sorted(set(edits), key=lambda e: (-e[1], e[0], e[2])):
                if op == "remove":
                    if position < len(chars) and chars[position] in _PUNCT:
                        del chars[position]
                else:
                    chars.insert(position, mark)
            shown = ", ".join(
                f"{op} {mark or repr(text[p])} at {p}"
                for op, p, mark in sorted(set(edits), key=lambda e: (e[1], e[0], e[2]))
            )
            return Change("punctuation", ((name, "".join(chars)),), None, f"punctuation in {name}: {shown}")

        return st.lists(st.one_of(remove, add), min_size=1, max_size=3).map(apply)

    return _field_and(fields, inner)


DISTRACTORS = (
    "Thanks in advance.",
    "Sent from my phone.",
    "Have a nice day!",
    "Sorry for the long message.",
    "I have been a customer for years.",
    "This is my second message about this.",
)


@register_perturbation(
    "distractor", promise="adds one neutral sentence before or after the text; the text itself is kept whole"
)
def distractor_changes(fields: dict[str, str], choices: list[str] | None):
    from hypothesis import strategies as st

    def inner(name: str, text: str):
        def apply(choice: tuple[int, bool]) -> Change:
            sentence, after = DISTRACTORS[choice[0]], choice[1]
            new = f"{text} {sentence}" if after else f"{sentence} {text}"
            return Change(
                "distractor", ((name, new),), None, f"{'appended' if after else 'prepended'} {sentence!r} to {name}"
            )

        return st.tuples(st.integers(0, len(DISTRACTORS) - 1), st.booleans().map(lambda b: not b)).map(apply)

    return _field_and(fields, inner)


@register_perturbation(
    "choice_order",
    promise="shows a classify task's choices in another order; the set of choices and the answer's label are unchanged",
    needs_choices=True,
)
def choice_order_changes(fields: dict[str, str], choices: list[str] | None):
    from hypothesis import strategies as st

    if not choices or len(choices) < 2:
        return st.nothing()

    def apply(order: list[str]) -> Change:
        return Change("choice_order", (), tuple(order), f"choices shown as {', '.join(order)}")

    return st.permutations(choices).filter(lambda order: list(order) != list(choices)).map(apply)


# --------------------------------------------------------------------------- the search


@dataclass
class RowOutcome:
    id: str
    held: bool
    flip: dict[str, Any] | None = None


@dataclass
class RobustnessReport:
    perturbations: list[str]
    tries: int
    seed: int
    rows: list[RowOutcome] = field(default_factory=list)
    calls: int = 0
    wall_s: float = 0.0
    batches: list[int] = field(default_factory=list)  # sizes of the pooled shrinking calls

    @property
    def invariance(self) -> float:
        return sum(r.held for r in self.rows) / len(self.rows) if self.rows else 1.0

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> RobustnessReport:
        """A report kept by ``dataclasses.asdict`` (in the result cache)."""
        report = cls(**{**data, "rows": [RowOutcome(**row) for row in data["rows"]]})
        report.cached = True
        return report

    cached = False  # answered from the result cache: the search did not run again

    def as_dict(self) -> dict[str, Any]:
        return {
            "cached": self.cached,
            "perturbations": self.perturbations,
            "tries": self.tries,
            "seed": self.seed,
            "examples": len(self.rows),
            "held": sum(r.held for r in self.rows),
            "invariance": self.invariance,
            "model_calls": self.calls,
            "shrink_batches": len(self.batches),
            "wall_s": round(self.wall_s, 3),
            "flipped": [r.flip for r in self.rows if r.flip is not None],
        }


class _Budget(Exception):
    """Raised inside Hypothesis to stop shrinking once a row has used its model calls."""


Predict = Callable[[list[tuple[str, dict[str, str], "list[str] | None"]]], list[str]]
"""Predictions for a batch of (row id, the row's text fields after a change, the choice order)."""


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


Row = tuple[str, dict[str, str], "list[str] | None", str]  # (row id, text fields, choices, original answer)


def search(
    rows: Sequence[Row], names: Sequence[str], predict: Predict, *, tries: int, seed: int, shrink_calls: int = 64
) -> RobustnessReport:
    """For each ``(row id, text fields, choices, original prediction)``, look for a change of the answer.

    ``predict`` maps a batch of (row id, changed text fields, choices) to predictions (labels, or
    normalised outputs for generate tasks). All rows' tries are predicted in one batch; only shrinking a
    flipped row calls it one change at a time, at most ``shrink_calls`` times per row."""
    from hypothesis import strategies as st

    started = time.perf_counter()
    registry = perturbations()
    report = RobustnessReport(list(names), tries, seed)
    strategies = {
        row_id: st.one_of([registry[name].factory(fields, choices) for name in names])
        for row_id, fields, choices, _ in rows
    }
    drawn = {row_id: _draw(strategies[row_id], tries, seed, row_id) for row_id, _, _, _ in rows}
    answers = _predict_drawn(rows, drawn, predict, report)
    flipped_rows = [row for row in rows if any(answers[(row[0], c.key)] != row[3] for c in drawn[row[0]])]
    shrunk = _shrink_all(
        flipped_rows, strategies, answers, predict, tries=tries, seed=seed, shrink_calls=shrink_calls, report=report
    )
    for row in rows:
        smallest, calls = shrunk.get(row[0], (None, 0))
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
    rows: Sequence[Row], drawn: dict[str, list[Change]], predict: Predict, report: RobustnessReport
) -> dict[tuple[str, tuple], str]:
    """2. Every row's tries predicted in one batch: the answer to each (row id, change key)."""
    answers: dict[tuple[str, tuple], str] = {}
    batch: list[tuple[str, Change]] = []
    for row_id, _, _, _ in rows:
        for change in drawn[row_id]:
            if (row_id, change.key) not in answers:
                answers[(row_id, change.key)] = ""  # placeholder, filled below
                batch.append((row_id, change))
    by_id = {row_id: (fields, choices) for row_id, fields, choices, _ in rows}
    if batch:
        predictions = predict([(row_id, *_apply(by_id[row_id], change)) for row_id, change in batch])
        report.calls += len(batch)
        for (row_id, change), prediction in zip(batch, predictions):
            answers[(row_id, change.key)] = prediction
    return answers


def _shrink_all(
    flipped_rows: list[Row],
    strategies: dict[str, Any],
    answers: dict[tuple[str, tuple], str],
    predict: Predict,
    *,
    tries: int,
    seed: int,
    shrink_calls: int,
    report: RobustnessReport,
) -> dict[str, tuple[Change | None, int]]:
    """3. Rows whose answer changed: replay each row's search (answered from the batch) and shrink it.
    The rows shrink concurrently, one thread each, and their model calls are pooled into batches."""
    from hypothesis import find
    from hypothesis.errors import NoSuchExample

    batcher = _Batcher(predict, len(flipped_rows))

    def shrink(row: Row) -> tuple[Change | None, int]:
        row_id, fields, choices, original = row
        state: dict[str, Any] = {"calls": 0, "smallest": None}

        def flips(change: Change) -> bool:
            key = (row_id, change.key)
            if key not in answers:
                if state["calls"] >= shrink_calls:
                    raise _Budget
                state["calls"] += 1
                answers[key] = batcher.ask((row_id, *_apply((fields, choices), change)))
            changed = answers[key] != original
            if changed:
                state["smallest"] = change
            return changed

        try:
            smallest = find(strategies[row_id], flips, settings=_settings(tries), random=_random(seed, row_id))
        except (_Budget, NoSuchExample):  # out of calls: keep the smallest change found so far
            smallest = state["smallest"]
        finally:
            batcher.leave()
        return smallest, state["calls"]

    shrunk: dict[str, tuple[Change | None, int]] = {}
    if flipped_rows:
        with ThreadPoolExecutor(max_workers=len(flipped_rows), thread_name_prefix="evalkit-shrink") as pool:
            for row, outcome in zip(flipped_rows, pool.map(shrink, flipped_rows)):
                shrunk[row[0]] = outcome
    report.batches = batcher.batches
    return shrunk


def _outcome(row: Row, smallest: Change | None, calls: int, answers: dict[tuple[str, tuple], str]) -> RowOutcome:
    row_id, fields, choices, original = row
    if smallest is None:
        return RowOutcome(row_id, held=True)
    perturbed_fields, _ = _apply((fields, choices), smallest)
    return RowOutcome(
        row_id,
        held=False,
        flip={
            "id": row_id,
            "kind": smallest.kind,
            "change": smallest.description,
            "original": dict(fields),
            "perturbed": {k: perturbed_fields[k] for k, _ in smallest.fields},
            "choices": list(choices) if choices else None,
            "perturbed_choices": list(smallest.choices) if smallest.choices else None,
            "before": original,
            "after": answers[(row_id, smallest.key)],
            "shrink_calls": calls,
        },
    )


def _search_rows(prepared: PreparedCandidate, examples: list[ExampleResult], picked: list[int]) -> list[Row]:
    """(row id, its text fields, its choices, its answer) of each picked row."""
    spec, task, dataset = prepared.spec, prepared.spec.task, prepared.dataset
    config = spec.robustness
    assert config is not None
    exclude = {name for name in (spec.id_field, task.target, task.choices_field) if name is not None}
    rows: list[Row] = []
    for i in picked:
        row = dataset.rows[i]
        missing = [name for name in config.fields or [] if not isinstance(row.fields.get(name), str)]
        if missing:
            raise DatasetError(
                f"robustness field '{missing[0]}' is not a text field of this row",
                **dataset.where(row),
                fix="name text fields in `robustness.fields`",
            )
        rows.append(
            (
                row.id,
                text_fields(row.fields, exclude, config.fields),
                prepared.row_choices(i),
                prepared.kind.answer_of(examples[i]),
            )
        )
    return rows


def _search_key(prepared: PreparedCandidate, backend: CachedBackend, rows: list[Row], picked: list[int]) -> KeyParts:
    """What a search's outcome depends on: model, adapter, how a row renders, the rows, the settings, the code."""
    config, dataset = prepared.spec.robustness, prepared.dataset
    assert config is not None
    inputs = {
        "template": prepared.template.sha256,
        "fewshot": prepared.fewshot,
        "chat": prepared.candidate.chat,
        "system": prepared.candidate.system,
        "task": prepared.spec.task.model_dump(mode="json"),
        "full": {row.id: row.fields for row in (dataset.rows[i] for i in picked)},
        "rows": rows,
        "code": search_fingerprint(config.perturbations),
    }
    return KeyParts(
        "robustness",
        backend.fingerprint,
        backend.adapter,
        hashlib.sha256(canonical_json(inputs).encode()).hexdigest(),
        canonical_json(config.model_dump(mode="json")),
    )


def check_robustness(
    prepared: PreparedCandidate, backend: CachedBackend, examples: list[ExampleResult]
) -> RobustnessReport:
    """Search each selected row of a candidate for a harmless-looking change that changes its answer.

    The search is deterministic given its answers, so its outcome is cached (:func:`_search_key`)."""
    config, dataset = prepared.spec.robustness, prepared.dataset
    assert config is not None
    picked = select_rows(list(range(len(dataset.rows))), config.examples, config.seed)
    rows = _search_rows(prepared, examples, picked)
    parts = _search_key(prepared, backend, rows, picked)
    stored = backend.cache.lookup([parts.key]) if backend.cache is not None else {}
    if stored:
        report = RobustnessReport.from_stored(json.loads(stored[parts.key][0]))
    else:
        report = search(
            rows,
            config.perturbations,
            lambda batch: prepared.kind.predict(prepared, backend, batch),
            tries=config.tries,
            seed=config.seed,
            shrink_calls=config.shrink_calls,
        )
        if backend.cache is not None:
            backend.cache.store([(parts, json.dumps(asdict(report)), report.wall_s)])
    held = {r.id: r.held for r in report.rows}
    for i in picked:
        examples[i].details["invariance"] = float(held[dataset.rows[i].id])
    return report


class _Batcher:
    """Pools the model calls of rows that shrink concurrently: a batch runs once every row still
    shrinking is waiting for an answer, so each shrink step of all rows costs one batched call."""

    def __init__(self, predict: Predict, rows: int) -> None:
        self.predict = predict
        self.active = rows
        self.pending: dict[int, tuple] = {}
        self.answers: dict[int, str] = {}
        self.error: BaseException | None = None
        self.batches: list[int] = []
        self.ticket = 0
        self.condition = threading.Condition()

    def ask(self, request: tuple) -> str:
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


def _apply(row: tuple[dict[str, str], list[str] | None], change: Change) -> tuple[dict[str, str], list[str] | None]:
    fields, choices = row
    return {**fields, **dict(change.fields)}, (list(change.choices) if change.choices is not None else choices)


def text_fields(row_fields: dict[str, Any], exclude: set[str], only: Sequence[str] | None) -> dict[str, str]:
    """The fields a perturbation may change: ``only`` when given, else every string field not excluded."""
    if only is not None:
        return {name: row_fields[name] for name in only if isinstance(row_fields.get(name), str)}
    return {name: value for name, value in row_fields.items() if isinstance(value, str) and name not in exclude}

"""The perturbations: their registry, and each built-in one as a Hypothesis strategy over a row's text
fields (or its choice order) that draws :class:`Change` values.

Custom perturbations: ``@register_perturbation("name")`` on a function ``(fields, choices) ->
SearchStrategy[Change]``, or the same function published under the entry-point group
``evalkit.perturbations``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from evalkit.errors import did_you_mean
from evalkit.registry import Registry

if TYPE_CHECKING:
    from collections.abc import Iterator

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


@dataclass(frozen=True)
class PerturbedRow:
    """A row as the model is asked it under a change: its id, its text fields (those a perturbation may
    change, after the change) and the choices shown. What a task kind's ``predict`` answers."""

    id: str
    fields: dict[str, str]
    choices: list[str] | None

    def __iter__(self) -> Iterator[object]:
        """``(id, fields, choices)``: a predictor written for that triple unpacks the row as before."""
        return iter((self.id, self.fields, self.choices))


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

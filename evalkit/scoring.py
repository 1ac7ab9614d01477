"""Scorers for ``generate`` tasks: each turns (model output, target) into a Score.

Built in: ``exact_match``, ``contains``, ``regex``, ``choice``, ``numeric``, ``json``, ``f1``, and ``judge`` (a
model grades the outputs: :mod:`evalkit.judge`, a :class:`evalkit.tasks.ModelGradedScorer`, published under the entry-point
group like a third-party scorer, so it is imported only when a suite names it). Custom scorers are
registered with :func:`register_scorer` or through the ``evalkit.scorers`` entry-point group, whose
entry points name a factory ``factory(**options) -> score(output, target) -> Score | float | bool``.
"""

from __future__ import annotations

import inspect
import json
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import ScorerError, did_you_mean
from evalkit.registry import Registry

ENTRY_POINT_GROUP = "evalkit.scorers"


@dataclass(frozen=True)
class Score:
    """``value`` in [0, 1]; ``correct`` decides accuracy; ``extracted`` is what the scorer compared;
    ``details``, what a model-graded scorer records for the example (the judge's answer, its grade)."""

    value: float
    correct: bool
    extracted: str | None = None
    details: Mapping[str, Any] | None = None


ScoreFn = Callable[[str, Any], Score]
Factory = Callable[..., Any]  # builds a score function, or a model-graded scorer (see evalkit.tasks)


@dataclass(frozen=True)
class ScorerFactory:
    """A registered scorer: ``factory(**options)`` builds the score function."""

    factory: Factory
    needs_target: bool = True  # False: it judges the output alone and needs no target field
    model_graded: bool = False  # True: it builds a ModelGradedScorer, which grades a whole candidate at once


def _as_scorer(name: str, loaded: Any) -> ScorerFactory:
    """What an entry point names: a ScorerFactory, or a plain factory ``(**options) -> score function``."""
    return loaded if isinstance(loaded, ScorerFactory) else ScorerFactory(loaded)


SCORERS: Registry[ScorerFactory] = Registry(
    "scorer", ENTRY_POINT_GROUP, adapt=_as_scorer, error=ScorerError, instance_of=ScorerFactory
)


def register_scorer(name: str, *, needs_target: bool = True) -> Callable[[Factory], Factory]:
    """Decorator registering a scorer factory under ``name``."""

    def decorate(factory: Factory) -> Factory:
        SCORERS.add(name, ScorerFactory(factory, needs_target))
        return factory

    return decorate


def available_scorers() -> list[str]:
    return SCORERS.names()


def scorer_needs_target(name: str) -> bool:
    return name not in SCORERS or SCORERS.get(name).needs_target


def build_scorer(name: str, options: Mapping[str, Any] | None = None, *, base_dir: Path | None = None) -> Any:
    """Instantiate scorer ``name`` with ``options``: a ScoreFn, or for a model-graded scorer the
    ModelGradedScorer it builds; raise ScorerError naming the fix."""
    options = dict(options or {})
    registered = SCORERS.get(name)
    factory = registered.factory
    params = _parameters(factory)
    if base_dir is not None and "base_dir" in inspect.signature(factory).parameters:
        options.setdefault("base_dir", base_dir)
    if params is not None:
        unknown = [k for k in options if k not in params]
        if unknown:
            raise ScorerError(
                f"scorer '{name}' has no option '{unknown[0]}'{did_you_mean(unknown[0], params)}",
                fix=f"its options are: {', '.join(p for p in params if p != 'base_dir') or 'none'}",
            )
    try:
        fn = factory(**options)
    except (TypeError, ValueError) as exc:
        raise ScorerError(f"scorer '{name}': {exc}", fix="check the scorer's options") from exc
    if registered.model_graded:
        return fn  # grades a whole candidate at once: see Generate.score
    return _normalise_result(name, fn)


def _parameters(factory: Factory) -> list[str] | None:
    sig = inspect.signature(factory)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return list(sig.parameters)


def _normalise_result(name: str, fn: Callable[[str, Any], Any]) -> ScoreFn:
    def score(output: str, target: Any) -> Score:
        result = fn(output, target)
        if isinstance(result, Score):
            return result
        if isinstance(result, bool):
            return Score(float(result), result)
        if isinstance(result, (int, float)) and 0.0 <= float(result) <= 1.0:
            return Score(float(result), float(result) >= 1.0)
        raise ScorerError(
            f"scorer '{name}' returned {result!r}", fix="a scorer returns a Score, a bool, or a number between 0 and 1"
        )

    return score


# --------------------------------------------------------------------------- normalisation

_PUNCT_EDGES = string.punctuation + "\u2018\u2019\u201c\u201d"


def normalise(text: str) -> str:
    """Case-fold, collapse whitespace and strip punctuation and quotes at both ends."""
    return " ".join(str(text).casefold().split()).strip(_PUNCT_EDGES + " ")


def _targets(target: Any) -> list[str]:
    if isinstance(target, (list, tuple)):
        return [str(t) for t in target]
    return [str(target)]


# --------------------------------------------------------------------------- built-in scorers


@register_scorer("exact_match")
def exact_match(ignore_case: bool = True, ignore_punctuation: bool = True):
    """Output equals the target (any of them, if a list) after normalisation."""

    def norm(text: str) -> str:
        text = " ".join(str(text).split())
        if ignore_case:
            text = text.casefold()
        if ignore_punctuation:
            text = text.strip(_PUNCT_EDGES + " ")
        return text

    def score(output: str, target: Any) -> Score:
        out = norm(output)
        ok = any(out == norm(t) for t in _targets(target))
        return Score(float(ok), ok, out)

    return score


@register_scorer("contains")
def contains(ignore_case: bool = True):
    """The target (any of them) appears in the output."""

    def score(output: str, target: Any) -> Score:
        out = " ".join(output.split())
        out = out.casefold() if ignore_case else out
        for t in _targets(target):
            t = " ".join(t.split())
            if (t.casefold() if ignore_case else t) in out:
                return Score(1.0, True, t)
        return Score(0.0, False, None)

    return score


@register_scorer("regex")
def regex(pattern: str, ignore_case: bool = False):
    """Extract the first match of ``pattern`` (its first group if it has one) and compare it with the target."""
    try:
        compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from None

    def score(output: str, target: Any) -> Score:
        match = compiled.search(output)
        if not match:
            return Score(0.0, False, None)
        found = match.group(1) if compiled.groups else match.group(0)
        found = (found or "").strip()
        ok = any(normalise(found) == normalise(t) for t in _targets(target))
        return Score(float(ok), ok, found)

    return score


@register_scorer("choice")
def choice(choices: list[str], letters: bool = False, ignore_case: bool = True):
    """Map the output to one of ``choices``: a choice's exact text (as a whole word), or with ``letters``
    the letter A, B, C... of the prompt's list too. The last match in the output wins (a model that
    reasons before it answers names its answer last), as in lm-evaluation-harness and inspect_ai. The
    target is the gold choice's text or its 0-based index."""
    if not isinstance(choices, (list, tuple)) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise ValueError("`choices` must list at least two non-empty choices")
    if letters and len(choices) > 26:
        raise ValueError("`letters` names at most 26 choices (A to Z)")
    ordered = sorted(choices, key=len, reverse=True)  # "billing dispute" before "billing"
    words = re.compile(
        r"(?<!\w)(" + "|".join(re.escape(c) for c in ordered) + r")(?!\w)", re.IGNORECASE if ignore_case else 0
    )
    by_text = {(c.casefold() if ignore_case else c): c for c in choices}
    # A letter as an answer: "(B)", "B)", "B.", "B:", or alone at the end ("Answer: B"); never the article "A".
    letter = re.compile(r"(?<![A-Za-z0-9])\(?([A-Z])(?:[).:\]](?!\w)|\s*$)")

    def pick(output: str) -> str | None:
        found = [
            (m.end(), by_text[m.group(1).casefold() if ignore_case else m.group(1)]) for m in words.finditer(output)
        ]
        if letters:
            found += [
                (m.end(), choices[ord(m.group(1)) - ord("A")])
                for m in letter.finditer(output)
                if ord(m.group(1)) - ord("A") < len(choices)
            ]
        return max(found)[1] if found else None

    def gold(target: Any) -> str:
        if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(choices):
            return choices[target]
        return str(target)

    def score(output: str, target: Any) -> Score:
        picked = pick(output)
        ok = picked is not None and any(normalise(picked) == normalise(gold(t)) for t in _as_list(target))
        return Score(float(ok), ok, picked)

    return score


def _as_list(target: Any) -> list[Any]:
    return list(target) if isinstance(target, (list, tuple)) else [target]


_NUMBER = re.compile(r"[-+]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")


def _to_float(text: str) -> float | None:
    try:
        return float(str(text).replace(",", "").replace("$", "").replace(" ", ""))
    except ValueError:
        return None


@register_scorer("numeric")
def numeric(tolerance: float = 1e-6, relative: bool = False, pick: str = "first"):
    """The first (or ``pick: last``) number in the output is within ``tolerance`` of the target."""
    if pick not in ("first", "last"):
        raise ValueError("pick must be 'first' or 'last'")

    def score(output: str, target: Any) -> Score:
        numbers = _NUMBER.findall(output)
        if not numbers:
            return Score(0.0, False, None)
        found = numbers[0] if pick == "first" else numbers[-1]
        value = _to_float(found)
        for t in _targets(target):
            expected = _to_float(t)
            if value is None or expected is None:
                continue
            limit = tolerance * abs(expected) if relative else tolerance
            if abs(value - expected) <= limit:
                return Score(1.0, True, found.strip())
        return Score(0.0, False, found.strip())

    return score


@register_scorer("json", needs_target=False)
def json_scorer(schema: Any = None, match_target: bool = False, base_dir: Path | None = None):
    """The output is valid JSON (code fences allowed), valid against ``schema`` if given
    (inline or a path relative to the suite), and equal to the target if ``match_target``."""
    validator = None
    if schema is not None:
        import jsonschema

        if isinstance(schema, str):
            schema_path = (base_dir or Path.cwd()) / schema
            try:
                schema = json.loads(schema_path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ValueError(f"cannot read JSON schema {schema_path}: {exc.strerror}") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"JSON schema {schema_path} is not valid JSON: {exc}") from None
        try:
            validator_cls = jsonschema.validators.validator_for(schema)
            validator_cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"invalid JSON schema: {exc.message}") from None
        validator = validator_cls(schema)

    def score(output: str, target: Any) -> Score:
        text = output.strip()
        fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.DOTALL)
        if fence:
            text = fence.group(1)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return Score(0.0, False, None)
        if validator is not None and not validator.is_valid(value):
            return Score(0.0, False, text)
        if match_target:
            expected = json.loads(target) if isinstance(target, str) else target
            ok = value == expected
            return Score(float(ok), ok, text)
        return Score(1.0, True, text)

    return score


def _f1_tokens(text: str) -> list[str]:
    text = str(text).casefold()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    return [t for t in text.split() if t not in ("a", "an", "the")]


@register_scorer("f1")
def f1(min_f1: float = 0.5):
    """Token-level F1 (SQuAD normalisation), best over targets; ``correct`` when F1 >= ``min_f1``."""
    if not 0.0 <= min_f1 <= 1.0:
        raise ValueError("min_f1 must be between 0 and 1")

    def score(output: str, target: Any) -> Score:
        predicted = _f1_tokens(output)
        best = 0.0
        for t in _targets(target):
            gold = _f1_tokens(t)
            common = sum((Counter(predicted) & Counter(gold)).values())
            if not predicted and not gold:
                best = 1.0
            elif common:
                precision, recall = common / len(predicted), common / len(gold)
                best = max(best, 2 * precision * recall / (precision + recall))
        return Score(best, best >= min_f1, None)

    return score

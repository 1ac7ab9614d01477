"""Test doubles for suites: a scripted model that answers from a table or a function, in milliseconds.

``ScriptedBackend`` is a backend like ``hf`` or ``openai``, registered as ``scripted``: a suite names it with
``model: {backend: scripted, answers: ...}``, and Python builds one with ``ScriptedBackend(answers=...)``
and runs a suite on it with :func:`evaluate`. It answers classify requests (the scripted label gets the
highest log-probability, every other choice a lower one) and generate requests (the scripted text, cut at
the request's stop strings), records every request it receives (``received``), and has an identity that
changes with its answers, so the result cache keys its answers like any model's.

``RecordingBackend`` watches another backend (a real model included): every request that reaches it,
every batch and every load, for a test that asserts what the result cache spared the model.

The module imports neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from evalkit.backends.base import (
    Backend,
    ChoiceRequest,
    ChoiceResult,
    GenerateRequest,
    GenerateResult,
    ModelConfig,
    ModelIdentity,
    Notify,
    StrictModel,
    cut_at_stop,
    register_backend,
)
from evalkit.errors import ModelError, shown_path

if TYPE_CHECKING:
    from evalkit.results import CandidateResult

__all__ = ["Received", "RecordingBackend", "Rule", "ScriptedBackend", "evaluate"]

TABLE_SUFFIXES = (".jsonl", ".yaml", ".yml")
RULE_KEYS = ("contains", "prompt", "id")


@dataclass(frozen=True)
class Received:
    """One request as it reached the model.

    ``prompt`` is what the model reads (a choice request's context, a generate request's prompt);
    ``choices`` are a classify request's continuations without their surrounding spaces (empty for
    generate); ``origin`` names the example (``suite::candidate::row id::repeat``, where the request
    came from a suite); ``request`` is the request itself."""

    kind: Literal["classify", "generate"]
    prompt: str
    choices: tuple[str, ...]
    origin: str | None
    request: ChoiceRequest | GenerateRequest

    @property
    def row_id(self) -> str | None:
        """The id of the row the request belongs to (None for a request from outside a suite)."""
        parts = self.origin.split("::") if self.origin else []
        return parts[2] if len(parts) == 4 else None

    @property
    def messages(self) -> tuple[tuple[str, str], ...]:
        """A chat candidate's turns as (role, content); empty for a plain prompt or a classify request."""
        return self.request.messages if isinstance(self.request, GenerateRequest) else ()


def as_received(request: ChoiceRequest | GenerateRequest) -> Received:
    """``request`` as a test reads it."""
    if isinstance(request, ChoiceRequest):
        choices = tuple(c.strip() for c in request.continuations)
        return Received("classify", request.context, choices, request.origin, request)
    return Received("generate", request.prompt, (), request.origin, request)


class Rule(StrictModel):
    """One line of an answer table: when every condition given holds, the model answers ``answer``."""

    contains: str | None = Field(None, min_length=1, description="a text the prompt contains")
    prompt: str | None = Field(None, description="the whole prompt, exactly")
    id: str | None = Field(None, description="the id of the row the request belongs to")
    answer: str = Field(description="a label for a classify request, a text for a generate request")

    @model_validator(mode="after")
    def _has_a_condition(self) -> Rule:
        if self.contains is None and self.prompt is None and self.id is None:
            raise ValueError(f"a rule needs one of {', '.join(RULE_KEYS)} besides `answer`")
        return self

    def matches(self, asked: Received) -> bool:
        return (
            (self.contains is None or self.contains in asked.prompt)
            and (self.prompt is None or self.prompt == asked.prompt)
            and (self.id is None or self.id == asked.row_id)
        )

    def shown(self) -> str:
        return ", ".join(f"{key}: {getattr(self, key)!r}" for key in RULE_KEYS if getattr(self, key) is not None)


def rules_of(table: Any) -> list[Rule]:
    """An answer table as rules, checked in order: a mapping of prompt substrings to answers, or a list
    of rules (``{contains: ..., answer: ...}``, ``{prompt: ...}``, ``{id: ...}``). ValueError says what
    is wrong with a table that is neither."""
    if isinstance(table, Mapping):
        rules = []
        for key, value in table.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"a key of the answers mapping is {key!r}; each key is a text the prompt contains")
            if not isinstance(value, str):
                raise ValueError(f"the answer to {key!r} is {value!r}; answers are texts (quote a number)")
            rules.append(Rule(contains=key, answer=value))
        return rules
    if isinstance(table, list):
        rules = []
        for i, item in enumerate(table, 1):
            if isinstance(item, Rule):
                rules.append(item)
                continue
            if not isinstance(item, Mapping):
                raise ValueError(f"rule {i} is {item!r}; a rule is a mapping such as {{contains: ..., answer: ...}}")
            unknown = [k for k in item if k not in (*RULE_KEYS, "answer")]
            if unknown:
                raise ValueError(f"rule {i} has unknown key '{unknown[0]}'; a rule has {', '.join(RULE_KEYS)}, answer")
            if not isinstance(item.get("answer"), str):
                raise ValueError(f"rule {i} needs `answer:` (a text), has {item.get('answer')!r}")
            if not any(isinstance(item.get(k), str) for k in RULE_KEYS):
                raise ValueError(f"rule {i} needs one of {', '.join(RULE_KEYS)} (a text) besides `answer`")
            rules.append(Rule.model_validate(dict(item)))
        return rules
    raise ValueError(
        "answers are a mapping {text in the prompt: answer}, a list of rules, or a table file "
        f"({', '.join(TABLE_SUFFIXES)}); got {type(table).__name__}"
    )


def read_table(path: Path) -> list[Rule]:
    """The rules in an answer table file: JSONL (one rule per line) or YAML (a mapping or a list of rules);
    ModelError naming the file (and the line of a JSONL rule) when it cannot be read."""
    if not path.is_file():
        raise ModelError(
            f"scripted answers file '{shown_path(path)}' does not exist",
            fix="paths in a suite are relative to the suite file's folder",
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rules = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rules += rules_of([json.loads(line)])
            except (ValueError, TypeError) as exc:
                message = str(exc).replace("rule 1 ", "the rule ").removeprefix("Value error, ")
                raise ModelError(message, path=path, line=number, fix="each line holds one rule as JSON") from None
        return rules
    from evalkit.suite import load_yaml

    try:
        return rules_of(load_yaml(path))
    except ValueError as exc:
        raise ModelError(str(exc), path=path, line=1) from None


def callable_identity(answer: Callable[..., Any], depth: int = 0) -> str:
    """What a function's answers depend on, as far as can be seen: its code, its defaults and what it
    closes over. A function whose behaviour depends on anything else should be given an ``identity``."""
    try:
        code = inspect.getsource(answer)
    except (OSError, TypeError):
        raw = getattr(answer, "__code__", None)
        code = repr((raw.co_code, raw.co_consts)) if raw is not None else _without_addresses(repr(answer))
    cells = [
        _value_identity(c.cell_contents, depth) for c in (getattr(answer, "__closure__", None) or ()) if _filled(c)
    ]
    defaults = [_value_identity(d, depth) for d in getattr(answer, "__defaults__", None) or ()]
    return json.dumps([getattr(answer, "__qualname__", ""), code, defaults, cells])


def _value_identity(value: Any, depth: int) -> str:
    """A value a function closes over, as text that is the same in every process: a function by its own
    identity, anything else by its repr without memory addresses."""
    if callable(value) and hasattr(value, "__code__") and depth < 3:
        return callable_identity(value, depth + 1)
    return _without_addresses(repr(value))


def _without_addresses(text: str) -> str:
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018  (an empty cell raises)
    except ValueError:
        return False
    return True


Answers = Mapping[str, str] | Sequence[Rule | Mapping[str, str]] | Callable[[Received], "str | None"]


class _Watching:
    """Requests as they reach a model: every one (``received``), each batch (``calls``) and each
    ``load()`` (``loads``: an evaluation that computes an answer asks once; none when the result cache
    answered everything)."""

    received: list[Received]
    calls: int
    loads: int

    def _watch(self, requests: Iterable[ChoiceRequest | GenerateRequest]) -> list[Received]:
        self.calls += 1
        batch = [as_received(r) for r in requests]
        self.received += batch
        return batch

    @property
    def prompts(self) -> list[str]:
        """The prompt of every request received, in order."""
        return [r.prompt for r in self.received]


class ScriptedSettings(StrictModel):
    """The ``model:`` keys of the ``scripted`` backend."""

    answers: Any = Field(
        None,
        description="a mapping {text the prompt contains: answer}, a list of rules ({contains|prompt|id: ..., "
        "answer: ...}), or a table file (.jsonl, .yaml) relative to the suite; checked in order",
    )
    default: str | None = Field(
        None,
        validate_default=True,
        description="the answer when no rule matches; without it an unmatched request is an error",
    )
    hit: float = Field(-0.1, le=0, description="log-probability of the scripted label of a classify request")
    miss: float = Field(
        -3.0, le=0, validate_default=True, description="log-probability of every other choice (below `hit`)"
    )

    @field_validator("answers")
    @classmethod
    def _table(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.endswith(TABLE_SUFFIXES):
                raise ValueError(
                    f"a text names a table file ({', '.join(TABLE_SUFFIXES)}) relative to the suite; got '{value}'"
                )
            return value
        if value is not None:
            rules_of(value)
        return value

    @field_validator("default")
    @classmethod
    def _something_to_say(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("answers") is None and "answers" in info.data:
            raise ValueError("the scripted backend needs `answers:` or a `default:` answer")
        return value

    @field_validator("miss")
    @classmethod
    def _below_hit(cls, value: float, info: ValidationInfo) -> float:
        hit = info.data.get("hit")
        if hit is not None and value >= hit:
            raise ValueError(f"miss ({value}) must be below hit ({hit}), so the scripted label wins")
        return value


@register_backend("scripted")
class ScriptedBackend(_Watching, Backend):
    """A model whose answers a test decides: from a table of rules, or from a function of the request.

    ``answers`` is a mapping {text the prompt contains: answer}, a list of :class:`Rule` (or mappings
    with ``contains``, ``prompt`` or ``id`` and ``answer``), checked in order; or a function
    ``answers(received) -> str | None`` of the :class:`Received` request. ``default`` answers what
    nothing matched (without it, ModelError names the prompt). A classify request gets ``hit`` as the
    log-probability of the choice equal to the answer and ``miss`` for every other; the answer must be
    one of the choices. A generate request gets the answer, cut before the first of its stop strings.

    ``identity`` pins the model's identity (the result cache's key); by default it is a hash of the
    table, or of the function's code and the values it closes over, with ``default``, ``hit`` and
    ``miss``. ``tokenizer`` is handed to code that asks the model for one (a judge checks its grades)."""

    Settings = ScriptedSettings

    def __init__(
        self,
        answers: Answers | None = None,
        *,
        default: str | None = None,
        hit: float = -0.1,
        miss: float = -3.0,
        name: str = "scripted",
        identity: str | None = None,
        tokenizer: Any = None,
    ) -> None:
        if miss >= hit:
            raise ValueError(f"miss ({miss}) must be below hit ({hit}), so the scripted label wins")
        if answers is None and default is None:
            raise ValueError("a scripted backend needs answers or a default answer")
        self.model_name = name
        self.default, self.hit, self.miss = default, hit, miss
        self._tokenizer = tokenizer
        self.received, self.calls, self.loads = [], 0, 0
        if callable(answers):
            self.rules: list[Rule] = []
            self._function: Callable[[Received], str | None] | None = answers
            described = callable_identity(answers)
        else:
            self.rules = rules_of(answers if answers is not None else [])
            self._function = None
            described = json.dumps([r.model_dump() for r in self.rules])
        key = identity if identity is not None else json.dumps([name, described, default, hit, miss])
        self.identity = ModelIdentity(f"scripted-{hashlib.sha256(key.encode()).hexdigest()[:16]}", "none")

    @classmethod
    def from_config(cls, model: ModelConfig, base_dir: Path, *, notify: Notify | None = None) -> ScriptedBackend:
        settings = ScriptedSettings.model_validate(model.model_extra or {})
        answers = settings.answers
        if isinstance(answers, str):
            answers = read_table(base_dir / answers)
        return cls(answers, default=settings.default, hit=settings.hit, miss=settings.miss, name=model.name)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def load(self) -> float:
        self.loads += 1
        return super().load()

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]]) -> str:
        """Each turn as ``<role>content``, one per line, then ``<assistant>``."""
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def answer(self, asked: Received) -> str:
        """The scripted answer to one request: the function's, or the first matching rule's, or the
        default; ModelError when there is none."""
        if self._function is not None:
            found = self._function(asked)
            if found is not None and not isinstance(found, str):
                raise ModelError(
                    f"the scripted backend's answer function returned {found!r} for prompt {asked.prompt!r}",
                    fix="return the answer as a text (or None for the default)",
                )
        else:
            found = next((rule.answer for rule in self.rules if rule.matches(asked)), None)
        if found is None:
            found = self.default
        if found is None:
            raise ModelError(
                f"the scripted backend has no answer for {asked.kind} prompt {asked.prompt!r}"
                + (f" (row {asked.row_id})" if asked.row_id else ""),
                fix="add a rule that matches it, or a `default:` answer",
            )
        return found

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        results = []
        for asked in self._watch(requests):
            label = self.answer(asked).strip()
            if label not in asked.choices:
                raise ModelError(
                    f"the scripted answer {label!r} to prompt {asked.prompt!r} is not one of its choices "
                    f"{list(asked.choices)}",
                    fix="script one of the task's choices for a classify request",
                )
            chosen = tuple(choice == label for choice in asked.choices)
            results.append(
                ChoiceResult(
                    tuple(self.hit if c else self.miss for c in chosen),
                    chosen,
                    len(asked.prompt.split()),
                    tuple(max(1, len(c.split())) for c in asked.choices),
                )
            )
        return results

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = []
        for asked, request in zip(self._watch(requests), requests):
            text = cut_at_stop(self.answer(asked), request.stop)
            results.append(GenerateResult(text, len(asked.prompt.split()), len(text.split())))
        return results


class RecordingBackend(_Watching, Backend):
    """``inner`` (any backend, a real model included), watched: the requests that reach it, its batches
    and its loads, with its identity, tokenizer and answers unchanged. Adapters are not watched."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.received, self.calls, self.loads = [], 0, 0

    @classmethod
    def from_config(cls, model: ModelConfig, base_dir: Path, *, notify: Notify | None = None) -> RecordingBackend:
        from evalkit.backends import open_backend

        return cls(open_backend(model, base_dir, notify=notify))

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    def load(self) -> float:
        self.loads += 1
        seconds = self.inner.load()
        self.load_s = self.inner.load_s
        return seconds

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return self.inner.apply_chat_template(messages)

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        self._watch(requests)
        return self.inner.score_choices(requests)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self._watch(requests)
        return self.inner.generate(requests)

    def close(self) -> None:
        self.inner.close()


def evaluate(
    suite: str | Path,
    candidate: str,
    backend: Backend | None = None,
    *,
    judge: Backend | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
) -> CandidateResult:
    """Evaluate ``candidate`` of the suite file ``suite`` as a pytest run would (prompts, scoring,
    robustness, thresholds), without the session around it: no baseline, no report, and no result cache
    unless ``cache_dir`` names one. ``backend`` answers for the suite's model; ``judge`` answers for every
    other model block (a judge's), by default ``backend`` does. Without ``backend``, each model block is
    built as the suite writes it (a suite on ``backend: scripted`` runs as written). Candidates with an
    adapter need a real model. A suite mistake raises SuiteError at its file:line, a model's ModelError
    names the suite's `model:` line."""
    from evalkit.backends import open_backend
    from evalkit.runner import Resources, evaluate_candidate
    from evalkit.suite import load_suite

    spec = load_suite(suite)
    models = [spec.model_for(name) for name in spec.candidates]  # what the candidates run on (not the judge)
    built: dict[str, Backend] = {}

    def backend_for(model: ModelConfig, base_dir: Path) -> Backend:
        given = backend if model in models or judge is None else judge
        if given is not None:
            return given
        key = model.model_dump_json()
        if key not in built:
            built[key] = open_backend(model, base_dir)
        return built[key]

    cache = None
    if cache_dir is not None:
        from evalkit.cache import ResultCache

        cache = ResultCache(Path(cache_dir))
    try:
        resources = Resources(backend=backend_for, cache=cache, adapter=_trained)
        return evaluate_candidate(spec, candidate, resources, limit=limit)
    except ModelError as error:  # name the suite line that chose the model
        raise error.located(spec.path, spec.model_line_of(candidate)) from None
    finally:
        if cache is not None:
            cache.close()
        for opened in built.values():
            opened.close()


def _trained(spec: Any, name: str) -> Any:
    """Adapter ``name`` of ``spec``, trained first when missing or stale (a suite's judge adapter, say)."""
    from evalkit.train import ensure_adapter

    return ensure_adapter(spec, name)

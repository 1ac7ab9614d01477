"""The backend interface every model implementation follows, its requests and results, and its registry.

A backend is built cheaply from a suite's ``model:`` block: it knows its identity (what its answers depend
on) without loading weights, and loads them on first need. Requests come in batches and results go back
in request order. Backends are registered by name (``@register_backend("hf")``, or the entry-point group
``evalkit.backends``); a suite picks one with ``model: {backend: NAME}``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from evalkit.errors import ModelError
from evalkit.registry import Registry

DEFAULT_MODEL = "smollm2-135m-instruct"


class StrictModel(BaseModel):
    """A suite section: unknown keys are mistakes, and values never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(StrictModel):
    """Which model to evaluate, and what runs it: an alias of the embedded default, a local folder, or a hub
    id, run by the ``hf`` backend; or what another backend names. Keys beyond these are the backend's own
    settings (its ``Settings``), checked when the suite is read."""

    model_config = ConfigDict(extra="allow", frozen=True)

    backend: str = Field(
        "hf",
        description="what runs the model: hf (in process, transformers), or a backend "
        "registered under the evalkit.backends entry-point group",
    )
    name: str = Field(DEFAULT_MODEL, description="alias, local Hugging Face folder, or cached hub id")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="weights dtype; auto: bfloat16 where the hardware computes it natively, else float32"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where the model runs; auto: a GPU when there is one"
    )
    trust_remote_code: bool = Field(False, description="allow a model's own Python code to run")
    allow_pickle: bool = Field(
        False,
        description="load pickle weights (*.bin, *.pt), which can run code when "
        "loaded; for checkpoints you trust that have no *.safetensors",
    )
    batch_size: int | None = Field(None, ge=1, description="rows per forward pass (default: automatic)")


ENTRY_POINT_GROUP = "evalkit.backends"
Notify = Callable[[str], None]


@dataclass(frozen=True)
class ChoiceRequest:
    """Score each continuation by its log-likelihood after ``context``.

    ``origin`` names the example the request belongs to (for the result cache's miss explanations); it
    is not part of what the answer depends on."""

    context: str
    continuations: tuple[str, ...]
    origin: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ChoiceResult:
    logprobs: tuple[float, ...]  # sum of token log-probabilities, one per continuation
    is_greedy: tuple[bool, ...]  # whether each continuation is the greedy decoding
    context_tokens: int
    continuation_tokens: tuple[int, ...]


@dataclass(frozen=True)
class GenerateRequest:
    """Decode after ``prompt`` (or answer ``messages``) until a stop string or ``max_new_tokens``.

    Greedy when ``temperature`` is 0; otherwise sampled from the request's own random stream
    (``seed``), so its output does not depend on which other requests share its batch."""

    prompt: str
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    origin: str | None = field(default=None, compare=False)
    # A chat candidate's turns as (role, content): a served model gets these and applies its own chat
    # template; an in-process model answers ``prompt``, which is these turns already rendered.
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GenerateResult:
    text: str  # the output, cut before the first stop string
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ModelIdentity:
    """What a model's answers depend on, known without loading it: its weights and its dtype."""

    base_fingerprint: str
    dtype: str

    @property
    def fingerprint(self) -> str:
        return f"{self.base_fingerprint}:{self.dtype}"


class NoSettings(StrictModel):
    """A backend whose suite block has no keys of its own."""


class Backend(ABC):
    """A model that answers batches of requests.

    Subclasses set ``identity`` when built (without loading weights), load their weights in
    :meth:`_load` (called once, on first need, by :meth:`load`), and implement chat rendering, choice
    scoring and generation. Adapters are an optional capability (``supports_adapters``)."""

    name: ClassVar[str] = ""  # the registry name, set by @register_backend
    Settings: ClassVar[type[BaseModel]] = NoSettings  # its own keys in a suite's `model:` block
    supports_adapters: ClassVar[bool] = False
    knows_weights: ClassVar[bool] = True  # identity hashes the weights (an adapter for other weights is refused)
    measures_latency: ClassVar[bool] = False  # a server answers each request: its latency is measured
    identity: ModelIdentity
    load_s: float | None = None  # seconds spent loading the weights; None until loaded
    requests_sent: int = 0  # requests this process has sent it (counted by the result cache's wrapper)
    concurrency: int | None = None  # requests it answers at once, for a server (its latency record says)
    served_at: str | None = None  # the URL of the server that answers, for a model that is not loaded here
    tokenizer: Any = None  # the model's tokenizer where one is at hand in this process (a property in most)

    @classmethod
    @abstractmethod
    def from_config(cls, model: ModelConfig, base_dir: Path, *, notify: Notify | None = None) -> Backend:
        """The backend for a suite's ``model:`` block (paths relative to ``base_dir``); loads no weights."""

    @classmethod
    def settings(cls, model: ModelConfig) -> BaseModel:
        """This backend's own keys of ``model`` (beyond the common ones), validated by ``Settings``."""
        return cls.Settings.model_validate(model.model_extra or {})

    @property
    def fingerprint(self) -> str:
        """Identifies every answer this backend gives (weights and dtype): the result cache's model key."""
        return self.identity.fingerprint

    def sharing_key(self) -> Hashable:
        """Backends with equal keys are interchangeable: a session keeps one of them (one copy of the weights)."""
        return (type(self).__name__, self.fingerprint)

    def load(self) -> float:
        """Load the weights if not loaded yet; the seconds it took (0 when they were loaded already)."""
        if self.load_s is not None:
            return 0.0
        started = time.perf_counter()
        self._load()
        self.load_s = time.perf_counter() - started
        return self.load_s

    def _load(self) -> None:
        """Load the weights (the default: a backend with nothing to load)."""

    @abstractmethod
    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text of a chat (system and user turns), ready for the assistant's answer."""

    @abstractmethod
    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        """Each request's continuations scored by log-likelihood, in request order."""

    @abstractmethod
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Each request's output, in request order."""

    def answers_as_ready(self, requests: Sequence[Any], batch: int) -> Iterator[list[tuple[int, Any, float]]]:
        """Answers to ``requests`` (all choice or all generate requests) as they become ready, in groups of
        (index into ``requests``, answer, seconds it took): what the result cache commits at once. The
        default answers ``batch`` requests per call; a backend whose answers arrive one by one (a server)
        hands each over as it comes, so an interruption loses none that finished."""
        answer = self.score_choices if requests and isinstance(requests[0], ChoiceRequest) else self.generate
        for start in range(0, len(requests), batch):
            chunk = requests[start : start + batch]
            started = time.perf_counter()
            results = answer(chunk)
            each = (time.perf_counter() - started) / len(chunk)
            yield [(start + i, result, each) for i, result in enumerate(results)]

    def with_adapter(self, key: str, path: Path) -> Backend:
        """This model seen through the LoRA adapter in ``path``, registered as ``key``."""
        raise ModelError(
            f"backend '{self.name}' cannot attach LoRA adapters",
            fix="evaluate adapter candidates on a backend that serves adapters (backend: hf)",
        )

    def close(self) -> None:
        """Release what the backend holds (weights, connections). The default holds nothing."""


B = TypeVar("B", bound=type[Backend])
BACKENDS: Registry[type[Backend]] = Registry("backend", ENTRY_POINT_GROUP, error=ModelError, subclass_of=Backend)


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator registering a Backend subclass under ``name``."""

    def decorate(cls: B) -> B:
        cls.name = name
        BACKENDS.add(name, cls)
        return cls

    return decorate


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            index = text.find(s)
            if index != -1:
                cut = min(cut, index)
    return text[:cut]

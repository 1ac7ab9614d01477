"""Requests and responses shared by every backend. Results always come back in request order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChoiceRequest:
    """Score each continuation by its log-likelihood after ``context``."""

    context: str
    continuations: tuple[str, ...]


@dataclass(frozen=True)
class ChoiceResult:
    logprobs: tuple[float, ...]  # sum of token log-probabilities, one per continuation
    is_greedy: tuple[bool, ...]  # whether each continuation is the greedy decoding
    context_tokens: int
    continuation_tokens: tuple[int, ...]


@dataclass(frozen=True)
class GenerateRequest:
    """Decode after ``prompt`` until a stop string or ``max_new_tokens``.

    Greedy when ``temperature`` is 0; otherwise sampled from the request's own random stream
    (``seed``), so its output does not depend on which other requests share its batch."""

    prompt: str
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class GenerateResult:
    text: str  # the output, cut before the first stop string
    prompt_tokens: int
    output_tokens: int


class Backend(Protocol):
    fingerprint: str

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str: ...

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]: ...

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            index = text.find(s)
            if index != -1:
                cut = min(cut, index)
    return text[:cut]

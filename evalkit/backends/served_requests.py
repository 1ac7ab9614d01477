"""What the ``openai`` backend sends to each endpoint and how it reads the answers.

- ``generate`` asks ``/v1/completions`` for a plain prompt and ``/v1/chat/completions`` for a chat
  candidate's turns (the server applies its own chat template): :func:`generate_one`.
- ``classify`` reads the log-probabilities of a prompt's own tokens from ``/v1/completions`` with
  ``echo`` and ``logprobs`` (:func:`echo`), and sums those of the continuation
  (:func:`continuation_by_offsets` when only the text offsets tell where it starts, :func:`summed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalkit.backends.base import GenerateRequest, GenerateResult, cut_at_stop
from evalkit.backends.served_client import ServerClient
from evalkit.errors import ModelError

WAY_OUT = (
    "evaluate the task as `kind: generate` with `scorer: {name: choice, choices: [...]}`, which maps the "
    "model's answer to one of the choices, or serve the model with vLLM, which returns them"
)
Scored = tuple[float, bool, int, int]  # (sum of log-probabilities, all greedy, context tokens, continuation tokens)


def generate_one(client: ServerClient, request: GenerateRequest, model: str) -> GenerateResult:
    """``model``'s answer to ``request``: its chat turns from the chat endpoint, else its prompt completed."""
    body: dict[str, Any] = {"model": model, "max_tokens": request.max_new_tokens, "temperature": request.temperature}
    if request.stop:
        body["stop"] = list(request.stop)
    if request.temperature:
        body.update(top_p=request.top_p, seed=request.seed)
    if request.messages:
        messages = [{"role": role, "content": content} for role, content in request.messages]
        response = client.chat(messages=messages, **body)
        text = response.choices[0].message.content or ""
    else:
        response = client.completion(prompt=request.prompt, **body)
        text = response.choices[0].text or ""
    usage = response.usage
    return GenerateResult(
        text=cut_at_stop(text, request.stop),
        prompt_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
    )


@dataclass(frozen=True)
class Echo:
    """The prompt log-probabilities a server echoed back (the generated token left out)."""

    tokens: list[str]
    logprobs: list[float | None]
    offsets: list[int]
    top: list[dict[str, float] | None]


def echo(client: ServerClient, prompt: str | list[int], model: str) -> Echo:
    """The server's log-probabilities of ``prompt``'s own tokens. One token is generated and dropped:
    some servers read ``max_tokens: 0`` as "no limit"."""
    response = client.completion(model=model, prompt=prompt, echo=True, logprobs=1, max_tokens=1, temperature=0.0)
    lp = response.choices[0].logprobs
    if lp is None or not lp.token_logprobs or all(v is None for v in lp.token_logprobs):
        raise ModelError(
            f"the server at {client.url} returns no log-probabilities for the prompt's own tokens (echo with "
            "logprobs), which `kind: classify` scores; llama.cpp's llama-server, Ollama and chat-only hosted "
            "APIs do not return them",
            fix=WAY_OUT,
        )
    generated = response.usage.completion_tokens if response.usage else 1
    keep = len(lp.token_logprobs) - generated
    return Echo(
        list(lp.tokens or [])[:keep],
        list(lp.token_logprobs)[:keep],
        list(lp.text_offset or [])[:keep],
        list(lp.top_logprobs or [None] * keep)[:keep],
    )


def continuation_by_offsets(echo: Echo, context: str, continuation: str) -> Scored:
    """(sum of log-probabilities, greedy, context tokens, continuation tokens) of the tokens that start at or
    after the end of ``context`` in the echoed text; ModelError unless they spell ``continuation``."""
    start = next((i for i, offset in enumerate(echo.offsets) if offset >= len(context)), len(echo.offsets))
    if start == 0 or "".join(echo.tokens[start:]) != continuation:
        raise ModelError(
            f"cannot tell where the continuation {continuation!r} starts among the tokens the server returned "
            f"({echo.tokens[max(0, start - 2) : start + 2]!r})",
            fix="add `tokenizer: <alias or folder of the served model>` to the suite's `model:` block",
        )
    return summed(echo, start, len(echo.tokens) - start, start)


def summed(echo: Echo, start: int, n: int, context_tokens: int) -> Scored:
    """The ``n`` echoed tokens from ``start`` scored: their log-probabilities summed, and whether each is
    the most likely token at its position."""
    values = echo.logprobs[start : start + n]
    if any(v is None for v in values):
        raise ModelError(
            "the server returned no log-probability for a continuation token", fix="check the server's logprobs support"
        )
    greedy = all(
        top is not None and v is not None and v >= max(top.values()) - 1e-6
        for v, top in zip(values, echo.top[start : start + n])
    )
    return float(sum(v for v in values if v is not None)), greedy, context_tokens, n

"""The ``openai`` backend: a model behind an OpenAI-compatible server (vLLM, llama.cpp, TGI, a hosted API).

- ``generate`` asks ``/v1/completions`` for a plain prompt and ``/v1/chat/completions`` for a chat
  candidate's turns (the server applies its own chat template).
- ``classify`` sums the continuation's token log-probabilities from ``/v1/completions`` with ``echo`` and
  ``logprobs`` (as lm-evaluation-harness's ``local-completions`` does), one request per choice. With a
  local ``tokenizer:`` the boundary between context and continuation is found in token ids (sent as ids
  where the server takes them) and the number of log-probabilities returned is checked against the
  prompt's length; without one, from the returned text offsets.
- Before the first classify request a two-request probe checks that the server's prompt log-probabilities
  line up with its tokens. llama.cpp's Python server reads them one token late for a model that adds no
  BOS token; prepending the BOS token realigns them, so evalkit does that where the probe shows it is
  needed (and says so).

Requests go out through the ``openai`` client (its retries: exponential backoff with jitter, honouring
``Retry-After``, for 408/409/429/5xx, timeouts and dropped connections), ``concurrency`` at a time, and
each answer is handed to the result cache as it arrives. Nothing leaves for a host outside the allow-list
(:mod:`evalkit.backends.hosts`); the key is read from the environment variable the suite names, and never
appears in a message, a record or the cache.

The work is split by job: :mod:`evalkit.backends.served_client` (the calls, their errors and retries, and
the requests in flight), :mod:`evalkit.backends.served_requests` (each endpoint's request and how its
answer is read), :mod:`evalkit.backends.served_classify` (choice scoring and the alignment probe) and
:mod:`evalkit.backends.served_identity` (what the server serves, and so the model's identity).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

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
    register_backend,
)
from evalkit.backends.batching import in_request_order
from evalkit.backends.served_classify import PROBE, EchoScorer
from evalkit.backends.served_client import NO_KEY, ServerClient, answer_concurrently
from evalkit.backends.served_identity import VOLATILE_MODEL_FIELDS, ServedModels
from evalkit.backends.served_requests import WAY_OUT, Echo, continuation_by_offsets, generate_one

__all__ = [
    "NO_KEY",
    "PROBE",
    "VOLATILE_MODEL_FIELDS",
    "WAY_OUT",
    "Echo",
    "ServedAdapter",
    "ServedBackend",
    "ServedSettings",
    "continuation_by_offsets",
]


class ServedSettings(StrictModel):
    """The ``model:`` keys of the ``openai`` backend."""

    base_url: str = Field(description="the server's OpenAI API root, for example http://127.0.0.1:8080/v1")
    tokenizer: str | None = Field(
        None,
        description="a local tokenizer (alias or folder) matching the served model: token-exact classify, "
        "token ids sent where the server takes them, and chat prompts rendered as the model's template does",
    )
    api_key_env: str | None = Field(None, description="the environment variable holding the key (never the key)")
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight")
    timeout_s: float = Field(60.0, gt=0, description="seconds one request may take before it is retried")
    max_retries: int = Field(5, ge=0, le=20, description="retries of a request that failed (429, 5xx, timeouts)")
    revision: str | None = Field(None, description="your pin of the served model's identity (part of the cache key)")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="fields added to every request body, for a server's own sampling options (llama.cpp: "
        "{repeat_penalty: 1.0}); part of the cache key",
    )
    api_key: str | None = Field(
        None,
        description="refused: a key written into a suite; the suite names its variable with api_key_env",
        exclude=True,
    )

    @field_validator("api_key")
    @classmethod
    def _no_key_in_suites(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError(
                "a suite must not hold a key (suites are read and shared in pull requests); put the key in an "
                "environment variable and name it with `api_key_env: EVALKIT_API_KEY`"
            )
        return None


class _AnsweredAsTheyArrive(Backend):
    """A backend whose answers come one by one (from a server): batch calls collect them in request order."""

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        return _in_order(self.answers_as_ready(requests, len(requests)), len(requests))

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return _in_order(self.answers_as_ready(requests, len(requests)), len(requests))


@register_backend("openai")
class ServedBackend(_AnsweredAsTheyArrive):
    """A model an OpenAI-compatible server answers for; ``name`` is the server's model id (or the name of
    an adapter it serves).

    Its collaborators each do one job: :attr:`client` (a :class:`ServerClient`) makes the calls,
    :attr:`models` (:class:`ServedModels`) knows what the server serves and so the model's identity, and
    :attr:`scorer` (an :class:`EchoScorer`) scores choices from echoed log-probabilities."""

    Settings = ServedSettings
    supports_adapters = True
    knows_weights = False
    measures_latency = True

    def __init__(self, name: str, settings: ServedSettings, base_dir: Path, *, notify: Notify | None = None) -> None:
        self.model_name = name
        self.options = settings
        self.concurrency = settings.concurrency
        self.client = ServerClient(
            settings.base_url,
            key_env=settings.api_key_env,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            extra_body=settings.extra_body,
        )
        self.url = self.client.url  # what messages show
        self.served_at = self.url
        self.models = ServedModels(self.client)
        self.scorer = EchoScorer(
            self.client, name, lambda: self.tokenizer, tokenizer_name=settings.tokenizer, notify=notify
        )
        self._base_dir = base_dir
        self._notify = notify
        self._tokenizer: Any = None
        self._identity: ModelIdentity | None = None

    @classmethod
    def from_config(cls, model: ModelConfig, base_dir: Path, *, notify: Notify | None = None) -> ServedBackend:
        settings = cls.settings(model)
        assert isinstance(settings, ServedSettings)
        return cls(model.name, settings, base_dir, notify=notify)

    def sharing_key(self) -> tuple:
        return (
            type(self).__name__,
            self.model_name,
            json.dumps(self.options.model_dump(), sort_keys=True, default=str),
        )

    def served_models(self) -> dict[str, dict[str, Any]]:
        """What ``/v1/models`` lists: model id -> its entry (fetched once)."""
        return self.models.listed()

    @property
    def identity(self) -> ModelIdentity:  # type: ignore[override]
        """The served model's id, what ``/v1/models`` says of it (its volatile fields left out), the suite's
        ``revision`` pin and ``extra_body``: a server whose model changed gives new cache keys."""
        if self._identity is None:
            self._identity = self.models.identity(self.model_name, self.options.revision, self.options.extra_body)
        return self._identity

    # ------------------------------------------------------------------ prompts

    @property
    def tokenizer(self) -> Any:
        """The local tokenizer named by ``tokenizer:`` (None without one)."""
        if self._tokenizer is None and self.options.tokenizer is not None:
            from transformers import AutoTokenizer

            from evalkit.models import resolve_model

            resolved = resolve_model(self.options.tokenizer, base_dir=self._base_dir, notify=self._notify)
            self._tokenizer = AutoTokenizer.from_pretrained(str(resolved.path))
        return self._tokenizer

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        """The local tokenizer's rendering where there is one; otherwise a readable one for reports (the
        server renders the turns of a generate request itself; classify needs the exact text)."""
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        text = "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages) + "<assistant>\n"
        self.scorer.chat_renderings.add(text)
        return text

    # ------------------------------------------------------------------ answers

    def answers_as_ready(self, requests: Sequence[Any], batch: int) -> Iterator[list[tuple[int, Any, float]]]:
        return self.answers_for(self.model_name, requests)

    def answers_for(self, model: str, requests: Sequence[Any]) -> Iterator[list[tuple[int, Any, float]]]:
        """``model``'s answers to ``requests``, each as it arrives, ``concurrency`` requests in flight. The
        first failure cancels the requests not yet sent; those in flight finish and are handed over before
        it is raised, so the cache keeps every answer the server gave."""
        if not requests:
            return
        if isinstance(requests[0], ChoiceRequest):
            self.scorer.prepare(requests)
            answer: Any = lambda request: self.scorer.score(request, model)  # noqa: E731
        else:
            answer = lambda request: generate_one(self.client, request, model)  # noqa: E731
        assert self.client.openai is not None  # built here, before the threads share it
        yield from answer_concurrently(answer, requests, self.options.concurrency)

    # ------------------------------------------------------------------ adapters

    def with_adapter(self, key: str, path: Path) -> Backend:
        return ServedAdapter(self, key)


class ServedAdapter(_AnsweredAsTheyArrive):
    """A LoRA adapter the server serves by name on the same base (vLLM: ``--enable-lora --lora-modules
    NAME=PATH``)."""

    knows_weights = False
    measures_latency = True

    def __init__(self, base: ServedBackend, name: str) -> None:
        self.base = base
        self.adapter_name = name
        self.concurrency = base.concurrency

    @classmethod
    def from_config(cls, model: ModelConfig, base_dir: Path, *, notify: Notify | None = None) -> Backend:
        raise TypeError("a ServedAdapter comes from ServedBackend.with_adapter")

    @property
    def identity(self) -> ModelIdentity:  # type: ignore[override]
        return self.base.identity

    @property
    def fingerprint(self) -> str:
        return f"{self.base.fingerprint}+{self.adapter_name}"

    def _load(self) -> None:
        self.base.models.require_adapter(self.adapter_name)

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return self.base.apply_chat_template(messages)

    def answers_as_ready(self, requests: Sequence[Any], batch: int) -> Iterator[list[tuple[int, Any, float]]]:
        self.load()
        return self.base.answers_for(self.adapter_name, requests)


def _in_order(groups: Iterator[list[tuple[int, Any, float]]], n: int) -> list:
    return in_request_order(n, ((i, result) for group in groups for i, result, _ in group))

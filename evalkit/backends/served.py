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
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
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
    cut_at_stop,
    register_backend,
)
from evalkit.backends.hosts import check_allowed, without_credentials
from evalkit.errors import ModelError

PROBE = "The capital of France is"  # a prompt whose greedy next token is certain for any instruct model
NO_KEY = "evalkit-no-key"  # the openai client insists on a key; servers without authentication ignore it
VOLATILE_MODEL_FIELDS = ("created",)  # vLLM reports the time of the request as `created`
WAY_OUT = (
    "evaluate the task as `kind: generate` with `scorer: {name: choice, choices: [...]}`, which maps the "
    "model's answer to one of the choices, or serve the model with vLLM, which returns them"
)


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


@dataclass(frozen=True)
class Echo:
    """The prompt log-probabilities a server echoed back (the generated token left out)."""

    tokens: list[str]
    logprobs: list[float | None]
    offsets: list[int]
    top: list[dict[str, float] | None]


class _AnsweredAsTheyArrive(Backend):
    """A backend whose answers come one by one (from a server): batch calls collect them in request order."""

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        return _in_order(self.answers_as_ready(requests, len(requests)), len(requests))

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return _in_order(self.answers_as_ready(requests, len(requests)), len(requests))


@register_backend("openai")
class ServedBackend(_AnsweredAsTheyArrive):
    """A model an OpenAI-compatible server answers for; ``name`` is the server's model id (or the name of
    an adapter it serves)."""

    Settings = ServedSettings
    supports_adapters = True
    knows_weights = False

    def __init__(self, name: str, settings: ServedSettings, base_dir: Path, *, notify: Notify | None = None) -> None:
        check_allowed(settings.base_url)
        self.model_name = name
        self.options = settings
        self._base_url = settings.base_url.rstrip("/")
        self.url = without_credentials(self._base_url)  # what messages show
        self.served_at = self.url
        self._base_dir = base_dir
        self._notify = notify
        self._key = self._read_key(settings.api_key_env)
        self._client_: Any = None
        self._tokenizer_: Any = None
        self._identity: ModelIdentity | None = None
        self._served: dict[str, dict[str, Any]] | None = None
        self._bos: bool | None = None  # whether prompts need the BOS token for aligned log-probabilities
        self._send_ids: bool | None = None  # whether the server takes token ids as a prompt
        self._chat_renderings: set[str] = set()  # prompts rendered here for a served chat template
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, model: ModelConfig, base_dir: Path, *, notify: Notify | None = None) -> ServedBackend:
        settings = cls.settings(model)
        assert isinstance(settings, ServedSettings)
        return cls(model.name, settings, base_dir, notify=notify)

    @staticmethod
    def _read_key(variable: str | None) -> str | None:
        if variable is None:
            return None
        key = os.environ.get(variable)
        if not key:
            raise ModelError(
                f"the suite reads the server's key from ${variable}, which is not set",
                fix=f"export {variable}=... (in CI: from the job's secrets)",
            )
        return key

    def sharing_key(self) -> tuple:
        return (
            type(self).__name__,
            self.model_name,
            json.dumps(self.options.model_dump(), sort_keys=True, default=str),
        )

    # ------------------------------------------------------------------ the server

    @property
    def _client(self) -> Any:
        if self._client_ is None:
            import openai

            self._client_ = openai.OpenAI(
                base_url=self._base_url,
                api_key=self._key or NO_KEY,
                timeout=self.options.timeout_s,
                max_retries=self.options.max_retries,
            )
        return self._client_

    def _redact(self, text: str) -> str:
        """``text`` without the key or the credentials of ``base_url``."""
        text = text.replace(self._base_url, self.url)
        return text.replace(self._key, "***") if self._key else text

    def _call(self, what: str, call: Any, **body: Any) -> Any:
        """One API call; the openai client retries it, and a final failure becomes a ModelError naming the
        URL and the server's own message."""
        import openai

        if self.options.extra_body:
            body["extra_body"] = self.options.extra_body
        try:
            return call(**body)
        except openai.APIStatusError as exc:
            detail = _server_message(exc)
            raise ModelError(
                self._redact(f"{self.url}/{what} answered {exc.status_code}: {detail}"),
                fix=_status_fix(exc.status_code, self.options.max_retries),
            ) from None
        except openai.APITimeoutError:
            raise ModelError(
                f"{self.url}/{what} did not answer within {self.options.timeout_s:g} s "
                f"({self.options.max_retries} retries)",
                fix="raise `timeout_s:` or lower `concurrency:`, or check the server's load",
            ) from None
        except openai.APIConnectionError as exc:
            raise ModelError(
                self._redact(f"cannot reach {self.url}/{what}: {exc.__cause__ or exc}"),
                fix="start the server, or correct `base_url:` in the suite's `model:` block",
            ) from None

    def served_models(self) -> dict[str, dict[str, Any]]:
        """What ``/v1/models`` lists: model id -> its entry (fetched once)."""
        if self._served is None:
            page = self._call("models", self._client.models.list)
            self._served = {entry.id: entry.model_dump() for entry in page.data}
        return self._served

    def _entry(self, name: str) -> dict[str, Any]:
        served = self.served_models()
        if name not in served:
            raise ModelError(
                f"the server at {self.url} serves no model '{name}'; it serves: {', '.join(sorted(served)) or 'nothing'}",
                fix="set the suite's `model: {name: ...}` to one of those ids",
            )
        return served[name]

    @property
    def identity(self) -> ModelIdentity:  # type: ignore[override]
        """The served model's id, what ``/v1/models`` says of it (its volatile fields left out), the suite's
        ``revision`` pin and ``extra_body``: a server whose model changed gives new cache keys."""
        if self._identity is None:
            entry = {k: v for k, v in self._entry(self.model_name).items() if k not in VOLATILE_MODEL_FIELDS}
            described = json.dumps(
                [self.model_name, entry, self.options.revision, self.options.extra_body], sort_keys=True, default=str
            )
            self._identity = ModelIdentity(hashlib.sha256(described.encode()).hexdigest()[:16], "served")
        return self._identity

    # ------------------------------------------------------------------ prompts

    @property
    def tokenizer(self) -> Any:
        """The local tokenizer named by ``tokenizer:`` (None without one)."""
        if self._tokenizer_ is None and self.options.tokenizer is not None:
            from transformers import AutoTokenizer

            from evalkit.models import resolve_model

            resolved = resolve_model(self.options.tokenizer, base_dir=self._base_dir, notify=self._notify)
            self._tokenizer_ = AutoTokenizer.from_pretrained(str(resolved.path))
        return self._tokenizer_

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        """The local tokenizer's rendering where there is one; otherwise a readable one for reports (the
        server renders the turns of a generate request itself; classify needs the exact text)."""
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        text = "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages) + "<assistant>\n"
        self._chat_renderings.add(text)
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
            self._prepare_classify(requests)
            answer: Any = self._score_one
        else:
            answer = self._generate_one
        assert self._client is not None  # built here, before the threads share it
        pool = ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="evalkit-served")
        failure: BaseException | None = None
        try:
            pending: dict[Future, int] = {pool.submit(_timed, answer, r, model): i for i, r in enumerate(requests)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                ready = []
                for future in done:
                    index = pending.pop(future)
                    if future.cancelled():
                        continue
                    if future.exception() is not None:
                        if failure is None:  # stop asking; the requests in flight still finish and are kept
                            failure = future.exception()
                            for other in pending:
                                other.cancel()
                        continue
                    result, seconds = future.result()
                    ready.append((index, result, seconds))
                if ready:
                    yield ready
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failure is not None:
            raise failure

    # ------------------------------------------------------------------ generate

    def _generate_one(self, request: GenerateRequest, model: str) -> GenerateResult:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.temperature:
            body.update(top_p=request.top_p, seed=request.seed)
        if request.messages:
            messages = [{"role": role, "content": content} for role, content in request.messages]
            response = self._call("chat/completions", self._client.chat.completions.create, messages=messages, **body)
            text = response.choices[0].message.content or ""
        else:
            response = self._call("completions", self._client.completions.create, prompt=request.prompt, **body)
            text = response.choices[0].text or ""
        usage = response.usage
        return GenerateResult(
            text=cut_at_stop(text, request.stop),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        )

    # ------------------------------------------------------------------ classify

    def _echo(self, prompt: str | list[int], model: str) -> Echo:
        """The server's log-probabilities of ``prompt``'s own tokens. One token is generated and dropped:
        some servers read ``max_tokens: 0`` as "no limit"."""
        response = self._call(
            "completions",
            self._client.completions.create,
            model=model,
            prompt=prompt,
            echo=True,
            logprobs=1,
            max_tokens=1,
            temperature=0.0,
        )
        lp = response.choices[0].logprobs
        if lp is None or not lp.token_logprobs or all(v is None for v in lp.token_logprobs):
            raise ModelError(
                f"the server at {self.url} returns no log-probabilities for the prompt's own tokens (echo with "
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

    def _prepare_classify(self, requests: Sequence[ChoiceRequest]) -> None:
        """Refuse a chat prompt rendered without the model's tokenizer; on first use, probe how the server's
        prompt log-probabilities line up and whether it takes token ids."""
        for request in requests:
            if request.context in self._chat_renderings:
                raise ModelError(
                    "a chat candidate of a classify task needs the exact prompt the served model sees, but the "
                    f"suite names no local tokenizer for {self.model_name}",
                    fix="add `tokenizer: <alias or folder of the served model>` to the suite's `model:` block",
                )
        with self._lock:
            if self._bos is None:
                self._bos = self._probe_alignment()
            if self._send_ids is None:
                self._send_ids = self.tokenizer is not None and self._takes_token_ids()

    def _aligned(self, prefix: str) -> bool:
        """Whether the log-probability the server reports for a greedy token is the highest at its position
        (it is, when each value is read from the distribution before its token)."""
        greedy = self._call(
            "completions",
            self._client.completions.create,
            model=self.model_name,
            prompt=prefix + PROBE,
            max_tokens=1,
            temperature=0.0,
        )
        echo = self._echo(prefix + PROBE + (greedy.choices[0].text or ""), self.model_name)
        value, top = echo.logprobs[-1], echo.top[-1]
        return value is not None and top is not None and bool(top) and value >= max(top.values()) - 1e-3

    def _probe_alignment(self) -> bool:
        """False when prompt log-probabilities line up as sent; True when they line up only after the
        model's BOS token (llama.cpp with a model that adds none); ModelError when neither."""
        if self._aligned(""):
            return False
        bos = getattr(self.tokenizer, "bos_token", None) if self.tokenizer is not None else None
        if bos and self._aligned(bos):
            if self._notify is not None:
                self._notify(
                    f"evalkit: {self.url} reports each prompt token's log-probability one token late (as llama.cpp "
                    f"does for a model that adds no BOS token); classify prompts are sent after the BOS token {bos!r}"
                )
            return True
        raise ModelError(
            f"the server at {self.url} reports prompt log-probabilities that do not line up with the prompt's "
            f"tokens{'' if bos else ' (prepending a BOS token needs a local tokenizer)'}",
            fix="add `tokenizer: <alias or folder of the served model>` to the suite's `model:` block, or " + WAY_OUT,
        )

    def _score_one(self, request: ChoiceRequest, model: str) -> ChoiceResult:
        if self.tokenizer is None:
            scores = [self._by_offsets(request.context, c, model) for c in request.continuations]
        else:
            from evalkit.backends.hf import encode_choices

            context_ids, continuations = encode_choices(self.tokenizer, request.context, request.continuations)
            scores = [
                self._by_token_ids(context_ids, ids, request.context + text, model)
                for ids, text in zip(continuations, request.continuations)
            ]
        return ChoiceResult(
            logprobs=tuple(s[0] for s in scores),
            is_greedy=tuple(s[1] for s in scores),
            context_tokens=scores[0][2] if scores else 0,
            continuation_tokens=tuple(s[3] for s in scores),
        )

    def _by_token_ids(
        self, context_ids: list[int], continuation_ids: list[int], text: str, model: str
    ) -> tuple[float, bool, int, int]:
        """(sum of log-probabilities, whether every token is the greedy one, context tokens, continuation
        tokens) of the continuation, split from the context in token ids as the in-process backend splits."""
        bos = [self.tokenizer.bos_token_id] if self._bos else []
        ids = bos + context_ids + continuation_ids
        echo = self._echo_ids(ids, text, model)
        dropped = ids.count(self.tokenizer.bos_token_id) if self.tokenizer.bos_token_id is not None else 0
        if len(echo.logprobs) not in (len(ids), len(ids) - dropped):
            raise ModelError(
                f"the server returned {len(echo.logprobs)} prompt log-probabilities for a prompt of {len(ids)} "
                f"tokens: its tokenizer splits the text differently from `tokenizer: {self.options.tokenizer}`",
                fix="set `tokenizer:` to the served model's own tokenizer",
            )
        n = len(continuation_ids)
        return _summed(echo, len(echo.logprobs) - n, n, len(context_ids))

    def _echo_ids(self, ids: list[int], text: str, model: str) -> Echo:
        """The echo of a prompt sent as token ids where the server takes them (vLLM does), else as text."""
        if self._send_ids:
            return self._echo(ids, model)
        bos = self.tokenizer.bos_token if self._bos else ""
        return self._echo(bos + text, model)

    def _takes_token_ids(self) -> bool:
        """Whether the server accepts a prompt of token ids (asked once, without retries: llama.cpp's Python
        server answers such a prompt with a 500)."""
        ids = self.tokenizer(PROBE).input_ids
        try:
            self._call(
                "completions",
                self._client.with_options(max_retries=0).completions.create,
                model=self.model_name,
                prompt=ids,
                max_tokens=1,
                temperature=0.0,
            )
        except ModelError:
            return False
        return True

    def _by_offsets(self, context: str, continuation: str, model: str) -> tuple[float, bool, int, int]:
        """Without a tokenizer: the continuation is what starts at or after the context's last character."""
        return continuation_by_offsets(self._echo(context + continuation, model), context, continuation)

    # ------------------------------------------------------------------ adapters

    def with_adapter(self, key: str, path: Path) -> Backend:
        return ServedAdapter(self, key)


class ServedAdapter(_AnsweredAsTheyArrive):
    """A LoRA adapter the server serves by name on the same base (vLLM: ``--enable-lora --lora-modules
    NAME=PATH``)."""

    knows_weights = False

    def __init__(self, base: ServedBackend, name: str) -> None:
        self.base = base
        self.adapter_name = name

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
        if self.adapter_name not in self.base.served_models():
            raise ModelError(
                f"the server at {self.base.url} does not serve the adapter '{self.adapter_name}'; it serves: "
                f"{', '.join(sorted(self.base.served_models()))}",
                fix=f"start vLLM with --enable-lora --lora-modules {self.adapter_name}=PATH (rank at most "
                "--max-lora-rank, 16 by default), or load it with POST /v1/load_lora_adapter",
            )

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return self.base.apply_chat_template(messages)

    def answers_as_ready(self, requests: Sequence[Any], batch: int) -> Iterator[list[tuple[int, Any, float]]]:
        self.load()
        return self.base.answers_for(self.adapter_name, requests)


# ---------------------------------------------------------------------- helpers


def _timed(answer: Any, request: Any, model: str) -> tuple[Any, float]:
    started = time.perf_counter()
    result = answer(request, model)
    return result, time.perf_counter() - started


def _in_order(groups: Iterator[list[tuple[int, Any, float]]], n: int) -> list:
    results: list[Any] = [None] * n
    for group in groups:
        for i, result, _ in group:
            results[i] = result
    return results


def continuation_by_offsets(echo: Echo, context: str, continuation: str) -> tuple[float, bool, int, int]:
    """(sum of log-probabilities, greedy, context tokens, continuation tokens) of the tokens that start at or
    after the end of ``context`` in the echoed text; ModelError unless they spell ``continuation``."""
    start = next((i for i, offset in enumerate(echo.offsets) if offset >= len(context)), len(echo.offsets))
    if start == 0 or "".join(echo.tokens[start:]) != continuation:
        raise ModelError(
            f"cannot tell where the continuation {continuation!r} starts among the tokens the server returned "
            f"({echo.tokens[max(0, start - 2) : start + 2]!r})",
            fix="add `tokenizer: <alias or folder of the served model>` to the suite's `model:` block",
        )
    return _summed(echo, start, len(echo.tokens) - start, start)


def _summed(echo: Echo, start: int, n: int, context_tokens: int) -> tuple[float, bool, int, int]:
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


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:500]
        return json.dumps(body)[:500]
    return str(getattr(exc, "message", exc))[:500]


def _status_fix(status: int, retries: int) -> str:
    if status in (401, 403):
        return "check the key in the variable `api_key_env:` names, and that it may use this model"
    if status == 404:
        return "check `base_url:` (it ends in /v1) and the model's name"
    if status == 429 or status >= 500:
        return f"the server kept failing after {retries} retries: raise `max_retries:` or lower `concurrency:`"
    return "the server refused the request as sent; its message above says why"

"""The HTTP side of the ``openai`` backend: one OpenAI client per server, its calls turned into clear
errors, and requests answered ``concurrency`` at a time, each handed over as it arrives.

The ``openai`` client retries a failed call (exponential backoff with jitter, honouring ``Retry-After``,
for 408/409/429/5xx, timeouts and dropped connections). The key is read from the environment variable a
suite names and never appears in a message: :meth:`ServerClient.redact` takes it, and the credentials of
the URL, out of every message built from what the server said.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from evalkit.backends.hosts import check_allowed, without_credentials
from evalkit.errors import ModelError

NO_KEY = "evalkit-no-key"  # the openai client insists on a key; servers without authentication ignore it
Ready = list[tuple[int, Any, float]]  # (index into the requests, answer, seconds it took)


def read_key(variable: str | None) -> str | None:
    """The key in environment variable ``variable`` (None when the suite names none)."""
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise ModelError(
            f"the suite reads the server's key from ${variable}, which is not set",
            fix=f"export {variable}=... (in CI: from the job's secrets)",
        )
    return key


class ServerClient:
    """Calls to one OpenAI-compatible server at ``base_url`` (checked against the host allow-list), with
    the key in environment variable ``key_env``."""

    def __init__(
        self,
        base_url: str,
        *,
        key_env: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        check_allowed(base_url)
        self._key = read_key(key_env)
        self.base_url = base_url.rstrip("/")
        self.url = without_credentials(self.base_url)  # what messages show
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.extra_body = extra_body or {}
        self._client: Any = None

    @property
    def openai(self) -> Any:
        """The ``openai.OpenAI`` client (built on first use; the threads answering requests share it)."""
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=self._key or NO_KEY,
                timeout=self.timeout_s,
                max_retries=self.max_retries,
            )
        return self._client

    def redact(self, text: str) -> str:
        """``text`` without the key or the credentials of ``base_url``."""
        text = text.replace(self.base_url, self.url)
        return text.replace(self._key, "***") if self._key else text

    def call(self, what: str, call: Callable[..., Any], **body: Any) -> Any:
        """One API call; the openai client retries it, and a final failure becomes a ModelError naming the
        URL and the server's own message."""
        import openai

        if self.extra_body:
            body["extra_body"] = self.extra_body
        try:
            return call(**body)
        except openai.APIStatusError as exc:
            raise ModelError(
                self.redact(f"{self.url}/{what} answered {exc.status_code}: {server_message(exc)}"),
                fix=status_fix(exc.status_code, self.max_retries),
            ) from None
        except openai.APITimeoutError:
            raise ModelError(
                f"{self.url}/{what} did not answer within {self.timeout_s:g} s ({self.max_retries} retries)",
                fix="raise `timeout_s:` or lower `concurrency:`, or check the server's load",
            ) from None
        except openai.APIConnectionError as exc:
            raise ModelError(
                self.redact(f"cannot reach {self.url}/{what}: {exc.__cause__ or exc}"),
                fix="start the server, or correct `base_url:` in the suite's `model:` block",
            ) from None

    def completion(self, *, retries: bool = True, **body: Any) -> Any:
        """``/v1/completions`` with ``body``; without ``retries``, a single try."""
        client = self.openai if retries else self.openai.with_options(max_retries=0)
        return self.call("completions", client.completions.create, **body)

    def chat(self, **body: Any) -> Any:
        """``/v1/chat/completions`` with ``body``."""
        return self.call("chat/completions", self.openai.chat.completions.create, **body)

    def models(self) -> dict[str, dict[str, Any]]:
        """What ``/v1/models`` lists: model id -> its entry."""
        page = self.call("models", self.openai.models.list)
        return {entry.id: entry.model_dump() for entry in page.data}


def answer_concurrently(answer: Callable[[Any], Any], requests: Sequence[Any], concurrency: int) -> Iterator[Ready]:
    """``answer(request)`` for every request, ``concurrency`` in flight, each answer handed over as it
    arrives. The first failure cancels the requests not yet sent; those in flight finish and are handed
    over before it is raised, so the cache keeps every answer the server gave."""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="evalkit-served")
    failure: BaseException | None = None
    try:
        pending: dict[Future, int] = {pool.submit(_timed, answer, r): i for i, r in enumerate(requests)}
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


def _timed(answer: Callable[[Any], Any], request: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = answer(request)
    return result, time.perf_counter() - started


def server_message(exc: Any) -> str:
    """The server's own message in a failed call's answer (at most 500 characters)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:500]
        return json.dumps(body)[:500]
    return str(getattr(exc, "message", exc))[:500]


def status_fix(status: int, retries: int) -> str:
    if status in (401, 403):
        return "check the key in the variable `api_key_env:` names, and that it may use this model"
    if status == 404:
        return "check `base_url:` (it ends in /v1) and the model's name"
    if status == 429 or status >= 500:
        return f"the server kept failing after {retries} retries: raise `max_retries:` or lower `concurrency:`"
    return "the server refused the request as sent; its message above says why"

"""Choice scoring on a served model: each continuation's log-probability summed from the prompt's echo.

One request per choice (as lm-evaluation-harness's ``local-completions`` does). With a local
``tokenizer:`` the boundary between context and continuation is found in token ids (sent as ids where
the server takes them) and the number of log-probabilities returned is checked against the prompt's
length; without one, from the returned text offsets.

Before the first classify request a two-request probe checks that the server's prompt log-probabilities
line up with its tokens. llama.cpp's Python server reads them one token late for a model that adds no BOS
token; prepending the BOS token realigns them, so evalkit does that where the probe shows it is needed
(and says so).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from evalkit.backends.base import ChoiceRequest, ChoiceResult, Notify
from evalkit.backends.encoding import encode_choices
from evalkit.backends.served_client import ServerClient
from evalkit.backends.served_requests import WAY_OUT, Echo, Scored, continuation_by_offsets, echo, summed
from evalkit.errors import ModelError

PROBE = "The capital of France is"  # a prompt whose greedy next token is certain for any instruct model
NEEDS_TOKENIZER = "add `tokenizer: <alias or folder of the served model>` to the suite's `model:` block"


class EchoScorer:
    """Scores choice requests for ``model_name`` on the server ``client`` calls; ``tokenizer()`` gives the
    local tokenizer (None without one)."""

    def __init__(
        self,
        client: ServerClient,
        model_name: str,
        tokenizer: Callable[[], Any],
        *,
        tokenizer_name: str | None = None,
        notify: Notify | None = None,
    ) -> None:
        self.client = client
        self.model_name = model_name
        self._tokenizer = tokenizer
        self.tokenizer_name = tokenizer_name
        self.notify = notify
        self.prepend_bos: bool | None = None  # whether prompts need the BOS token for aligned log-probabilities
        self.send_ids: bool | None = None  # whether the server takes token ids as a prompt
        self.chat_renderings: set[str] = set()  # prompts rendered without the model's chat template
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer()

    def prepare(self, requests: Sequence[ChoiceRequest]) -> None:
        """Refuse a chat prompt rendered without the model's tokenizer; on first use, probe how the server's
        prompt log-probabilities line up and whether it takes token ids."""
        for request in requests:
            if request.context in self.chat_renderings:
                raise ModelError(
                    "a chat candidate of a classify task needs the exact prompt the served model sees, but the "
                    f"suite names no local tokenizer for {self.model_name}",
                    fix=NEEDS_TOKENIZER,
                )
        with self._lock:
            if self.prepend_bos is None:
                self.prepend_bos = self._probe_alignment()
            if self.send_ids is None:
                self.send_ids = self.tokenizer is not None and self._takes_token_ids()

    def score(self, request: ChoiceRequest, model: str) -> ChoiceResult:
        """``model``'s log-likelihood of each continuation of ``request`` (after :meth:`prepare`)."""
        if self.tokenizer is None:
            scores = [self._by_offsets(request.context, c, model) for c in request.continuations]
        else:
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

    # ------------------------------------------------------------------ scoring

    def _by_token_ids(self, context_ids: list[int], continuation_ids: list[int], text: str, model: str) -> Scored:
        """The continuation scored, split from the context in token ids as the in-process backend splits."""
        tokenizer = self.tokenizer
        ids = ([tokenizer.bos_token_id] if self.prepend_bos else []) + context_ids + continuation_ids
        echoed = self._echo_ids(ids, text, model)
        dropped = ids.count(tokenizer.bos_token_id) if tokenizer.bos_token_id is not None else 0
        if len(echoed.logprobs) not in (len(ids), len(ids) - dropped):
            raise ModelError(
                f"the server returned {len(echoed.logprobs)} prompt log-probabilities for a prompt of {len(ids)} "
                f"tokens: its tokenizer splits the text differently from `tokenizer: {self.tokenizer_name}`",
                fix="set `tokenizer:` to the served model's own tokenizer",
            )
        n = len(continuation_ids)
        return summed(echoed, len(echoed.logprobs) - n, n, len(context_ids))

    def _echo_ids(self, ids: list[int], text: str, model: str) -> Echo:
        """The echo of a prompt sent as token ids where the server takes them (vLLM does), else as text."""
        if self.send_ids:
            return echo(self.client, ids, model)
        bos = self.tokenizer.bos_token if self.prepend_bos else ""
        return echo(self.client, bos + text, model)

    def _by_offsets(self, context: str, continuation: str, model: str) -> Scored:
        """Without a tokenizer: the continuation is what starts at or after the context's last character."""
        return continuation_by_offsets(echo(self.client, context + continuation, model), context, continuation)

    # ------------------------------------------------------------------ probes

    def _aligned(self, prefix: str) -> bool:
        """Whether the log-probability the server reports for a greedy token is the highest at its position
        (it is, when each value is read from the distribution before its token)."""
        greedy = self.client.completion(model=self.model_name, prompt=prefix + PROBE, max_tokens=1, temperature=0.0)
        echoed = echo(self.client, prefix + PROBE + (greedy.choices[0].text or ""), self.model_name)
        value, top = echoed.logprobs[-1], echoed.top[-1]
        return value is not None and top is not None and bool(top) and value >= max(top.values()) - 1e-3

    def _probe_alignment(self) -> bool:
        """False when prompt log-probabilities line up as sent; True when they line up only after the
        model's BOS token (llama.cpp with a model that adds none); ModelError when neither."""
        if self._aligned(""):
            return False
        bos = getattr(self.tokenizer, "bos_token", None) if self.tokenizer is not None else None
        if bos and self._aligned(bos):
            if self.notify is not None:
                self.notify(
                    f"evalkit: {self.client.url} reports each prompt token's log-probability one token late (as "
                    f"llama.cpp does for a model that adds no BOS token); classify prompts are sent after the BOS "
                    f"token {bos!r}"
                )
            return True
        raise ModelError(
            f"the server at {self.client.url} reports prompt log-probabilities that do not line up with the "
            f"prompt's tokens{'' if bos else ' (prepending a BOS token needs a local tokenizer)'}",
            fix=f"{NEEDS_TOKENIZER}, or {WAY_OUT}",
        )

    def _takes_token_ids(self) -> bool:
        """Whether the server accepts a prompt of token ids (asked once, without retries: llama.cpp's Python
        server answers such a prompt with a 500)."""
        ids = self.tokenizer(PROBE).input_ids
        try:
            self.client.completion(retries=False, model=self.model_name, prompt=ids, max_tokens=1, temperature=0.0)
        except ModelError:
            return False
        return True

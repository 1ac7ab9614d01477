"""The transformers backend: shared-prefix choice scoring and batched greedy generation.

The backend plans the work of a call (:mod:`evalkit.backends.prefix` groups rows by a shared prefix,
:mod:`evalkit.backends.batching` cuts them into batches) and hands each batch to the loaded model
(:mod:`evalkit.backends.hf_model`), which :mod:`evalkit.backends.hf_scoring` and
:mod:`evalkit.backends.hf_generation` run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from evalkit.backends.base import (
    Backend,
    ChoiceRequest,
    ChoiceResult,
    GenerateRequest,
    GenerateResult,
    ModelConfig,
    ModelIdentity,
    Notify,
    register_backend,
)
from evalkit.backends.batching import generation_batches, in_request_order, pack_batches, scoring_batches
from evalkit.backends.encoding import encode_choices, encode_pair
from evalkit.backends.hf_model import KVStates, LoadedHF, LoadOptions, load_model, load_tokenizer, peft_quietly
from evalkit.backends.prefix import MIN_SHARED, PrefixGroup, PrefixStore, Tokens, packed_groups, plan_prefixes
from evalkit.errors import ModelError

__all__ = ["AdapterView", "HFBackend", "LoadedHF", "encode_choices", "encode_pair", "peft_quietly"]


@register_backend("hf")
class HFBackend(Backend):
    """A causal LM from a local folder, run in process with transformers; LoRA adapters attach with peft.

    Built from a suite (:meth:`from_config`) it costs nothing: the tokenizer loads on first use (chat
    rendering needs nothing more) and the weights on first scoring or generation (:attr:`loaded`). One
    instance is shared by every suite and candidate of a session."""

    supports_adapters = True
    min_shared = MIN_SHARED  # tokens rows must have in common before their prefix is computed once

    def __init__(
        self,
        path: Path,
        *,
        fingerprint: str,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        batch_size: int | None = None,
        device: str = "auto",
        allow_pickle: bool = False,
        lazy: bool = False,
    ) -> None:
        """The model in ``path``, loaded now, or with ``lazy`` when an answer first needs it."""
        from evalkit.models import effective_dtype

        self.path = Path(path)
        self.identity = ModelIdentity(fingerprint, effective_dtype(dtype))
        self.batch_size = batch_size
        self.load_options = LoadOptions(self.identity.dtype, device, trust_remote_code, allow_pickle)
        self._tokenizer: Any = None
        self._loaded: LoadedHF | None = None
        # Key/value states of shared prompt prefixes, kept for later calls while the weights stay fixed.
        self.prefixes = PrefixStore()
        if not lazy:
            self.load()

    @classmethod
    def from_config(cls, model: ModelConfig, base_dir: Path, *, notify: Notify | None = None) -> HFBackend:
        from evalkit.models import resolve_model

        resolved = resolve_model(model.name, base_dir=base_dir, notify=notify, allow_pickle=model.allow_pickle)
        return cls(
            resolved.path,
            fingerprint=resolved.fingerprint,
            dtype=model.dtype,
            trust_remote_code=model.trust_remote_code,
            batch_size=model.batch_size,
            device=model.device,
            allow_pickle=model.allow_pickle,
            lazy=True,
        )

    @classmethod
    def from_model(cls, model, tokenizer, *, fingerprint: str, batch_size: int | None = None) -> HFBackend:
        """A backend around an already loaded model (for example one being trained)."""
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        path = Path(getattr(model, "name_or_path", "") or "<in memory>")
        backend = cls(path, fingerprint=fingerprint, dtype=dtype, batch_size=batch_size, lazy=True)
        backend._tokenizer, backend._loaded = tokenizer, LoadedHF.around(model, tokenizer)
        backend.prefixes = PrefixStore(budget=0)  # a model handed over may be training: its prefixes go stale
        backend.load_s = 0.0
        return backend

    def sharing_key(self) -> tuple:
        o = self.load_options
        return (
            type(self).__name__,
            str(self.path),
            o.dtype,
            o.trust_remote_code,
            self.batch_size,
            o.device,
            o.allow_pickle,
        )

    @property
    def base_fingerprint(self) -> str:
        return self.identity.base_fingerprint

    @property
    def dtype_name(self) -> str:
        return self.identity.dtype

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, loaded on first use (without the weights)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.path, self.load_options)
        return self._tokenizer

    @property
    def loaded(self) -> LoadedHF:
        """The loaded model, its tokenizer and the parts the backend calls (loaded on first use)."""
        self.load()
        assert self._loaded is not None
        return self._loaded

    @property
    def model(self) -> Any:
        """The transformers model (loaded on first use; the peft model once an adapter is attached)."""
        return self.loaded.model

    def _load(self) -> None:
        self._loaded = load_model(self.path, self.tokenizer, self.load_options)

    def close(self) -> None:
        self._loaded = None
        self.prefixes.clear()
        self.load_s = None

    # ------------------------------------------------------------------ adapters

    @property
    def adapters(self) -> Mapping[str, Path]:
        """The LoRA adapters attached to the loaded weights: name -> folder (none before loading)."""
        return dict(self._loaded.adapters) if self._loaded is not None else {}

    def load_adapter(self, name: str, path: Path) -> None:
        """Attach the LoRA adapter in ``path`` as ``name`` (loading the weights first; once per name)."""
        self._loaded = self.loaded.with_adapter(name, Path(path), base=self.path)

    @contextlib.contextmanager
    def use_adapter(self, name: str | None) -> Iterator[None]:
        """Run with the attached adapter ``name`` active, or (None) the base model, every adapter disabled."""
        with self.loaded.using(name):
            yield

    def with_adapter(self, key: str, path: Path) -> AdapterView:
        """This model seen through the LoRA adapter in ``path``, attached as ``key`` when it first answers
        (loaded once; the base weights are shared)."""
        return AdapterView(self, key, Path(path))

    # ------------------------------------------------------------------ prompts

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"model {self.path} has no chat template", fix="set `chat: false`")
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    # ------------------------------------------------------------------ batching

    def _shared_prefixes(self, adapter: str | None, sequences: Sequence[Sequence[int]]) -> list[PrefixGroup]:
        """The rows grouped by the token prefix each group computes once (see evalkit.backends.prefix)."""
        return plan_prefixes(sequences, self.prefixes.prefixes(adapter), self.min_shared)

    def _prefix_states(self, adapter: str | None, prefix: Tokens) -> KVStates | None:
        """Every layer's (keys, values) for ``prefix`` (None when empty); kept for later calls unless the
        weights may change under this backend (a model being trained)."""
        if not prefix:
            return None
        nbytes = lambda states: sum(k.nbytes + v.nbytes for k, v in states)  # noqa: E731
        return self.prefixes.computed(adapter, prefix, self.loaded.prefix_states, nbytes)

    # ------------------------------------------------------------------ answers

    def score_choices(self, requests: Sequence[ChoiceRequest], *, adapter: str | None = None) -> list[ChoiceResult]:
        """Log-likelihood of every continuation (with the attached ``adapter``, else the base model); each
        context runs once, continuations reuse its cache."""
        with self.use_adapter(adapter):
            return self._score_choices(adapter, requests)

    def _score_choices(self, adapter: str | None, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        from evalkit.backends.hf_scoring import encode_requests, score_batch, score_packs

        loaded = self.loaded
        encoded = encode_requests(loaded, requests)
        answered: list[tuple[int, ChoiceResult]] = []
        groups, packs = packed_groups(self._shared_prefixes(adapter, [ctx for ctx, _ in encoded]))
        for group in groups:
            shared, states = len(group.prefix), self._prefix_states(adapter, group.prefix)
            rows = {i: encoded[i] for i in group.rows}
            for batch in scoring_batches(rows, shared, batch_size=self.batch_size, fits=loaded.rows_in_memory):
                answered += zip(batch, score_batch(loaded, [encoded[i] for i in batch], shared, states))
        laid_out = [[encoded[i] for i in pack] for pack in packs]
        for batch in pack_batches(laid_out, batch_size=self.batch_size):
            members = [i for p in batch for i in packs[p]]
            answered += zip(members, score_packs(loaded, [laid_out[p] for p in batch]))
        return in_request_order(len(requests), answered)

    def generate(self, requests: Sequence[GenerateRequest], *, adapter: str | None = None) -> list[GenerateResult]:
        """Decoding in length-sorted batches (with the attached ``adapter``, else the base model); a row
        leaves its batch once it stops."""
        with self.use_adapter(adapter):
            return self._generate(adapter, requests)

    def _generate(self, adapter: str | None, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        from evalkit.backends.hf_generation import generate_planned, settings_of

        loaded = self.loaded
        encoded = [loaded.tokenizer(r.prompt).input_ids or [loaded.start_id] for r in requests]
        answered: list[tuple[int, GenerateResult]] = []
        for group in self._shared_prefixes(adapter, encoded):
            shared, states = len(group.prefix), self._prefix_states(adapter, group.prefix)
            planned = generation_batches(
                {i: len(encoded[i]) - shared for i in group.rows},
                lambda i: settings_of(requests[i]),
                batch_size=self.batch_size,
                fits=lambda length, settings: loaded.rows_in_memory(shared + length + settings[0]),  # noqa: B023
            )
            answered += generate_planned(loaded, requests, encoded, planned, shared, states)
        return in_request_order(len(requests), answered)


class AdapterView(Backend):
    """The shared base model seen through one attached LoRA adapter."""

    def __init__(self, base: HFBackend, key: str, path: Path) -> None:
        self.base = base
        self.key = key
        self.path = path
        self.identity = base.identity  # the adapter is keyed on its own (by its weights' hash)

    @classmethod
    def from_config(cls, model: ModelConfig, base_dir: Path, *, notify: Notify | None = None) -> Backend:
        raise TypeError("an AdapterView comes from HFBackend.with_adapter")

    @property
    def fingerprint(self) -> str:
        return f"{self.base.fingerprint}+{self.key}"

    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    def _load(self) -> None:
        self.base.load_adapter(self.key, self.path)

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return self.base.apply_chat_template(messages)

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        self.load()
        return self.base.score_choices(requests, adapter=self.key)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self.load()
        return self.base.generate(requests, adapter=self.key)

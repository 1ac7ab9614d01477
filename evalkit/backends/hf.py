"""The transformers backend: shared-prefix choice scoring and batched greedy generation."""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
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
    cut_at_stop,
    register_backend,
)
from evalkit.backends.prefix import MIN_SHARED, PrefixGroup, PrefixStore, Tokens, plan_prefixes
from evalkit.errors import ModelError

TOKEN_BUDGET = 4096  # padded tokens per forward pass when the batch size is automatic
MAX_AUTO_BATCH = 64  # rows per scoring pass (TOKEN_BUDGET usually binds first)
MAX_GENERATE_BATCH = 128  # decoding steps are small, so generation gains from many rows per step
MEMORY_SHARE = 0.25  # of the memory available now, at most this much for one batch's cache and logits
MIN_FILL = 0.9  # a row shorter than this share of its batch's longest starts a new batch...
MIN_SPLIT = 512  # ...once the batch holds this many padded tokens (smaller matrix products run far slower)


@contextlib.contextmanager
def peft_quietly():
    """peft (0.21) calls a transformers property that transformers 5 deprecates; the warning is not the user's to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Split like lm-evaluation-harness: trailing spaces of the context move to the continuation,
    and the continuation is what encoding the whole adds after the context's tokens."""
    context_ids, (continuation_ids,) = encode_choices(tokenizer, context, [continuation])
    return context_ids, continuation_ids


def encode_choices(tokenizer, context: str, continuations: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """:func:`encode_pair` for every continuation of one context, in one call to the tokenizer."""
    spaces = len(context) - len(context.rstrip(" "))
    head, moved = (context[:-spaces], context[-spaces:]) if spaces else (context, "")
    context_ids, *wholes = tokenizer([head, *(head + moved + c for c in continuations)]).input_ids
    return context_ids, [whole[len(context_ids) :] for whole in wholes]


@register_backend("hf")
class HFBackend(Backend):
    """A causal LM from a local folder, run in process with transformers; LoRA adapters attach with peft.

    Built from a suite (:meth:`from_config`) it costs nothing: the tokenizer loads on first use (chat
    rendering needs nothing more) and the weights on first scoring or generation. One instance is shared by
    every suite and candidate of a session."""

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
        self._trust_remote_code = trust_remote_code
        self._device_name = device
        self._allow_pickle = allow_pickle
        self._tokenizer: Any = None
        self._model: Any = None
        # Key/value states of shared prompt prefixes, kept for later calls while the weights stay fixed.
        self._prefixes = PrefixStore()
        self._keep_prefixes = True
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
        backend = cls(
            Path(getattr(model, "name_or_path", "") or "<in memory>"),
            fingerprint=fingerprint,
            dtype=dtype,
            batch_size=batch_size,
            lazy=True,
        )
        backend._tokenizer, backend._model = tokenizer, model
        backend._keep_prefixes = False  # a model handed over may be training: its prefixes go stale
        backend._setup()
        backend.load_s = 0.0
        return backend

    def sharing_key(self) -> tuple:
        return (
            type(self).__name__,
            str(self.path),
            self.dtype_name,
            self._trust_remote_code,
            self.batch_size,
            self._device_name,
            self._allow_pickle,
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
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(
                    str(self.path), trust_remote_code=self._trust_remote_code
                )
            except (OSError, ValueError) as exc:
                raise ModelError(
                    f"cannot load model from {self.path}: {exc}",
                    fix="check that the folder holds a complete causal LM saved by save_pretrained",
                ) from None
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The transformers model (loaded on first use)."""
        self.load()
        return self._model

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        from evalkit.models import use_safetensors

        hf_logging.disable_progress_bar()
        tokenizer = self.tokenizer
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(self.path),
                dtype=getattr(torch, self.dtype_name),
                trust_remote_code=self._trust_remote_code,
                use_safetensors=use_safetensors(self._allow_pickle),
            )
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load model from {self.path}: {exc}",
                fix="check that the folder holds a complete causal LM saved by save_pretrained",
            ) from None
        device = self._device_name
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._tokenizer, self._model = tokenizer, model.to(device)  # type: ignore[arg-type]
        self._setup()

    def close(self) -> None:
        self._model = None
        self._prefixes.clear()
        self.load_s = None

    def _setup(self) -> None:
        import torch

        self._adapters: dict[str, Path] = {}
        self._model.eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._torch = torch
        model = self._model
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        generation_config = getattr(inner, "generation_config", None)
        eos = generation_config.eos_token_id if generation_config is not None else None
        eos_ids = eos if isinstance(eos, list) else [eos]
        # transformers renamed `past_key_values` to `cache` (argument and output field) in 5.2x.
        forward_params = inspect.signature(inner.forward).parameters
        self._cache_kw = "cache" if "cache" in forward_params else "past_key_values"
        # The decoder and the vocabulary projection, called apart so logits are computed only where scored
        # (LoRA layers sit inside these modules, so an attached adapter applies here too).
        self._decoder = inner.get_decoder()
        self._lm_head = inner.get_output_embeddings()
        self._start_id = (
            self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        )
        self._eos_ids = sorted({t for t in [*eos_ids, self.tokenizer.eos_token_id] if t is not None})
        self._end_ids = {*self._eos_ids, self.tokenizer.pad_token_id}

    @property
    def _text_config(self) -> Any:
        """The language model's own config (a multimodal model's text part)."""
        config = self.model.config
        return getattr(config, "get_text_config", lambda: config)()

    @property
    def _device(self):
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ adapters

    def with_adapter(self, key: str, path: Path) -> AdapterView:
        """This model seen through the LoRA adapter in ``path``, attached as ``key`` when it first answers
        (loaded once; the base weights are shared)."""
        return AdapterView(self, key, Path(path))

    def _attach(self, key: str, path: Path) -> None:
        self.load()
        if key not in self._adapters:
            from peft import PeftModel

            try:
                with peft_quietly():
                    if isinstance(self._model, PeftModel):
                        self._model.load_adapter(str(path), adapter_name=key)
                    else:
                        self._model = PeftModel.from_pretrained(self._model, str(path), adapter_name=key)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise ModelError(
                    f"cannot attach adapter {path} to model {self.path}: {exc}",
                    fix="retrain the adapter for this base model (evalkit train SUITE --adapter NAME)",
                ) from None
            self._model.eval()
            self._adapters[key] = Path(path)

    @contextlib.contextmanager
    def _using(self, adapter: str | None):
        """Run with ``adapter`` active, or with every attached adapter disabled for the base model."""
        if not self._adapters:
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(adapter)
            yield

    # ------------------------------------------------------------------ prompts

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"model {self.path} has no chat template", fix="set `chat: false`")
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    # ------------------------------------------------------------------ batching

    def rows_in_memory(self, tokens: int) -> int:
        """How many rows of ``tokens`` tokens (shared prefix included) one batch may hold: their key/value
        cache and logits must fit in a share of the memory available now (GPU memory on a GPU), and at
        most MAX_GENERATE_BATCH."""
        config = self._text_config
        layers: int = getattr(config, "num_hidden_layers", 32)
        heads: int = (
            config.num_key_value_heads
            if getattr(config, "num_key_value_heads", None)
            else getattr(config, "num_attention_heads", 32)
        )
        head_dim: int = getattr(config, "head_dim", None) or config.hidden_size // getattr(
            config, "num_attention_heads", 32
        )
        element = int(next(self.model.parameters()).element_size())
        per_row = tokens * 2 * layers * heads * head_dim * element + 4 * config.vocab_size
        return max(1, min(MAX_GENERATE_BATCH, int(MEMORY_SHARE * self._available_memory()) // per_row))

    def _available_memory(self) -> int:
        if self._device.type == "cuda":
            return self._torch.cuda.mem_get_info(self._device)[0]
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return 2 << 30

    def _batches(
        self, order: list[int], lengths: list[int], default: int = MAX_AUTO_BATCH, min_fill: float = MIN_FILL
    ) -> list[list[int]]:
        """Consecutive slices of ``order`` (longest first), each padded to its first row's length.

        A fixed ``batch_size`` gives slices of that many rows. Otherwise a slice holds at most ``default``
        rows and TOKEN_BUDGET padded tokens, and once it holds MIN_SPLIT padded tokens, a row shorter
        than ``min_fill`` of the slice's first starts a new slice (for scoring, padding then stays under
        about a tenth of the tokens, while short rows still make matrix products large enough to run
        near the machine's rate)."""
        batches: list[list[int]] = []
        for i in order:
            current = batches[-1] if batches else None
            if current is not None:
                width = lengths[current[0]]
                if self.batch_size:
                    full = len(current) >= self.batch_size
                else:
                    full = (
                        len(current) >= default
                        or (len(current) + 1) * width > TOKEN_BUDGET
                        or (lengths[i] < min_fill * width and len(current) * width >= MIN_SPLIT)
                    )
                if not full:
                    current.append(i)
                    continue
            batches.append([i])
        return batches

    # ------------------------------------------------------------------ shared prefixes

    def _shared_prefixes(self, adapter: str | None, sequences: Sequence[Sequence[int]]) -> list[PrefixGroup]:
        """The rows grouped by the token prefix each group computes once (see evalkit.backends.prefix)."""
        return plan_prefixes(sequences, self._prefixes.prefixes(adapter), self.min_shared)

    def _prefix_states(self, adapter: str | None, prefix: Tokens) -> list[tuple[Any, Any]]:
        """Every layer's (keys, values) for ``prefix`` as a batch of one; kept for later calls unless the
        weights may change under this backend (a model being trained)."""
        states = self._prefixes.get(adapter, prefix)
        if states is None:
            torch, device = self._torch, self._device
            with torch.inference_mode():
                out = self._decoder(
                    input_ids=torch.tensor([prefix], device=device),
                    position_ids=torch.arange(len(prefix), device=device)[None],
                    use_cache=True,
                )
            states = [(keys, values) for keys, values, *_ in getattr(out, self._cache_kw)]
            if self._keep_prefixes:
                self._prefixes.put(adapter, prefix, states, sum(k.nbytes + v.nbytes for k, v in states))
        return states

    def _cache_after(self, states: list | None, rows: int, capacity: int) -> Any:
        """A key/value cache for ``rows`` rows of up to ``capacity`` positions, holding the shared prefix's
        ``states`` when there are some (see evalkit.backends.kv_cache): each forward pass writes its new
        keys and values into it instead of concatenating. Models whose layers are not all full attention
        (sliding windows, linear attention) get transformers' own cache, which knows their layers."""
        config = self._text_config
        if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
            if not states:
                return None  # the model builds its own
            from transformers import DynamicCache

            return DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in states])
        from evalkit.backends.kv_cache import reserved_cache

        return reserved_cache(config.num_hidden_layers, rows, capacity, states)

    # ------------------------------------------------------------------ classify

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        """Log-likelihood of every continuation; each context runs once, continuations reuse its cache."""
        return self._score_with(None, requests)

    def _score_with(self, adapter: str | None, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        self.load()
        with self._using(adapter):
            return self._score_choices(adapter, requests)

    def _score_choices(self, adapter: str | None, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        encoded = []
        for r in requests:
            context_ids, continuations = encode_choices(self.tokenizer, r.context, r.continuations)
            for choice, cont in zip(r.continuations, continuations):
                if not cont:
                    raise ModelError(f"choice {choice!r} encodes to no tokens", fix="choices must be non-empty text")
            encoded.append((context_ids or [self._start_id], continuations))
        results: list[ChoiceResult | None] = [None] * len(requests)
        for group in self._shared_prefixes(adapter, [ctx for ctx, _ in encoded]):
            shared = len(group.prefix)
            states = self._prefix_states(adapter, group.prefix) if shared else None
            rows = [encoded[i] for i in group.rows]
            # A row's own sequence: its context after the prefix, then every continuation but its last token.
            lengths = [len(ctx) - shared + sum(len(c) - 1 for c in conts) for ctx, conts in rows]
            order = sorted(range(len(rows)), key=lambda k: -lengths[k])
            most = min(MAX_AUTO_BATCH, self.rows_in_memory(shared + lengths[order[0]])) if shared else MAX_AUTO_BATCH
            for batch in self._batches(order, lengths, default=most):
                for k, result in zip(batch, self._score_batch([rows[k] for k in batch], shared, states)):
                    results[group.rows[k]] = result
        return results  # type: ignore[return-value]

    def _score_batch(
        self, batch: list[tuple[list[int], list[list[int]]]], shared: int = 0, states: list | None = None
    ) -> list[ChoiceResult]:
        """Score every continuation of every row in one forward pass, computing each token once.

        A row is laid out as its context followed by its continuations side by side (all but each one's
        last token, which is only predicted). A tree-shaped attention mask lets a continuation token see
        the context and the earlier tokens of its own continuation, and position ids restart after the
        context for each continuation, so each continuation is scored exactly as if it followed the
        context alone. The first ``shared`` context tokens, the same in every row, are not laid out: their
        key/value ``states`` are computed once and every token of the batch sees them. Rows are
        left-padded; the vocabulary projection runs only where a token is scored."""
        torch = self._torch
        layout = _ScoringLayout.of(torch, batch, shared, self.tokenizer.pad_token_id)
        device = self._device
        width = layout.input_ids.shape[1]
        prefix = {self._cache_kw: self._cache_after(states, len(batch), shared + width)} if shared else {}
        with torch.inference_mode():
            hidden = self._decoder(
                input_ids=layout.input_ids.to(device),
                attention_mask=layout.allowed[:, None].to(device),
                position_ids=layout.position_ids.to(device),
                use_cache=False,
                **prefix,
            ).last_hidden_state
            where = torch.tensor(list(layout.read), device=device)
            logprobs_all = torch.log_softmax(self._lm_head(hidden[where[:, 0], where[:, 1]]).float(), dim=-1).cpu()
        target_ids, read_ids = torch.tensor(layout.targets), torch.tensor(layout.reads)
        picked = logprobs_all[read_ids, target_ids].tolist()
        hits = (logprobs_all.argmax(-1)[read_ids] == target_ids).tolist()
        return [
            ChoiceResult(
                logprobs=tuple(float(sum(picked[first : first + count])) for first, count in row_spans),
                is_greedy=tuple(all(hits[first : first + count]) for first, count in row_spans),
                context_tokens=len(ctx),
                continuation_tokens=tuple(len(c) for c in conts),
            )
            for (ctx, conts), row_spans in zip(batch, layout.spans)
        ]

    # ------------------------------------------------------------------ generate

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Decoding in length-sorted batches; a row leaves its batch once it stops."""
        return self._generate_with(None, requests)

    def _generate_with(self, adapter: str | None, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self.load()
        with self._using(adapter):
            return self._generate(adapter, requests)

    def _generate(self, adapter: str | None, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        encoded = [self.tokenizer(r.prompt).input_ids or [self._start_id] for r in requests]
        results: list[GenerateResult | None] = [None] * len(requests)
        for group in self._shared_prefixes(adapter, encoded):
            shared = len(group.prefix)
            states = self._prefix_states(adapter, group.prefix) if shared else None
            lengths = {i: len(encoded[i]) - shared for i in group.rows}
            settings: dict[tuple, list[int]] = {}
            for i in sorted(group.rows, key=lambda i: -lengths[i]):
                r = requests[i]
                settings.setdefault((r.max_new_tokens, r.stop, r.temperature, r.top_p), []).append(i)
            for (max_new_tokens, stop, temperature, top_p), indices in settings.items():
                rows = self.rows_in_memory(shared + lengths[indices[0]] + max_new_tokens)
                # Padding costs only the prompt pass; the decoding steps gain from every row in the batch.
                for batch in self._batches(indices, lengths, default=rows, min_fill=0.0):  # type: ignore[arg-type]
                    sampling = None if temperature == 0 else (temperature, top_p, [requests[i].seed for i in batch])
                    own = [encoded[i][shared:] for i in batch]
                    texts = self._generate_batch(own, max_new_tokens, stop, sampling, shared, states)
                    for i, (text, n_out) in zip(batch, texts):
                        results[i] = GenerateResult(text=text, prompt_tokens=len(encoded[i]), output_tokens=n_out)
        return results  # type: ignore[return-value]

    def _left_padded(self, batch: list[list[int]], shared: int = 0) -> tuple[Any, Any, Any]:
        """(input ids, attention mask, position ids) of a left-padded batch that continues ``shared``
        prefix tokens (the mask covers them too), on the model's device."""
        torch = self._torch
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([torch.ones((len(batch), shared), dtype=torch.long), mask], dim=-1)
        return input_ids.to(self._device), mask.to(self._device), positions.to(self._device)

    def _generate_batch(
        self,
        batch: list[list[int]],
        max_new_tokens: int,
        stop: tuple[str, ...],
        sampling: tuple[float, float, list[int]] | None = None,
        shared: int = 0,
        states: list | None = None,
    ) -> list[tuple[str, int]]:
        """Decode one left-padded batch; ``sampling`` = (temperature, top_p, one seed per row), else greedy.
        The rows continue ``shared`` prefix tokens whose key/value ``states`` are already computed."""
        torch = self._torch
        device = self._device
        input_ids, mask, positions = self._left_padded(batch, shared)
        generated: list[list[int]] = [[] for _ in batch]
        texts = [""] * len(batch)
        active = list(range(len(batch)))  # original row of each position in the running batch
        # one random stream per row: its samples do not depend on the batch around it
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in sampling[2]] if sampling else []
        cache = self._cache_after(states, len(batch), shared + input_ids.shape[1] + max_new_tokens)
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kw: cache},
            )
            cache = getattr(out, self._cache_kw)
            next_pos = positions[:, -1] + 1
            for step in range(max_new_tokens):
                if sampling is None:
                    tokens = out.logits[:, -1].argmax(-1)
                else:
                    tokens = _sample(
                        torch, out.logits[:, -1], sampling[0], sampling[1], [generators[r] for r in active]
                    )
                keep = self._still_going(tokens.tolist(), active, generated, texts, stop)
                if not keep or step == max_new_tokens - 1:
                    break
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    tokens, mask, next_pos = tokens[index], mask[index], next_pos[index]
                    active = [active[k] for k in keep]
                mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long, device=device)], dim=-1)
                out = self.model(
                    input_ids=tokens[:, None],
                    attention_mask=mask,
                    position_ids=next_pos[:, None],
                    use_cache=True,
                    **{self._cache_kw: cache},
                )
                cache = getattr(out, self._cache_kw)
                next_pos = next_pos + 1
        return [(cut_at_stop(text, stop), len(ids)) for text, ids in zip(texts, generated)]

    def _still_going(
        self, tokens: list[int], active: list[int], generated: list[list[int]], texts: list[str], stop: tuple[str, ...]
    ) -> list[int]:
        """Append each active row's new token and text; the positions (in ``active``) of the rows that go on:
        neither an end token nor a stop string yet."""
        keep = []
        for k, row in enumerate(active):
            if tokens[k] in self._end_ids:
                continue
            generated[row].append(tokens[k])
            texts[row] = self.tokenizer.decode(generated[row], skip_special_tokens=True)
            if not any(s and s in texts[row] for s in stop):
                keep.append(k)
        return keep


@dataclass
class _ScoringLayout:
    """The tensors and bookkeeping of one scoring batch (see HFBackend._score_batch)."""

    input_ids: Any
    position_ids: Any
    allowed: Any  # (rows, width, shared + width): which tokens each token may attend to
    read: dict[tuple[int, int], int]  # (row, column) where the model's prediction is read -> its index
    reads: list[int]  # per scored token: which read predicts it
    targets: list[int]  # and the token it should give
    spans: list[list[tuple[int, int]]]  # per row and continuation: (first, count) into the targets

    @classmethod
    def of(cls, torch: Any, batch: list[tuple[list[int], list[list[int]]]], shared: int, pad: int) -> _ScoringLayout:
        layouts = [_tree_layout(ctx[shared:], conts, start=shared) for ctx, conts in batch]
        width = max(len(tokens) for tokens, _, _ in layouts)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        position_ids = torch.zeros((len(batch), width), dtype=torch.long)
        allowed = torch.zeros((len(batch), width, shared + width), dtype=torch.bool)
        allowed[:, :, :shared] = True  # every token sees the shared prefix
        allowed[:, :, shared:] = torch.eye(width, dtype=torch.bool)  # padding sees only itself
        read: dict[tuple[int, int], int] = {}
        reads: list[int] = []
        targets: list[int] = []
        spans: list[list[tuple[int, int]]] = []
        for row, ((ctx, conts), (tokens, positions, groups)) in enumerate(zip(batch, layouts)):
            n, offset = len(tokens), width - len(tokens)
            input_ids[row, offset:] = torch.tensor(tokens)
            position_ids[row, offset:] = torch.tensor(positions)
            group = torch.tensor(groups)
            index = torch.arange(n)
            allowed[row, offset:, shared + offset :] = (index[None, :] <= index[:, None]) & (
                (group[None, :] == -1) | (group[None, :] == group[:, None])
            )
            own_context = len(ctx) - shared
            row_spans, column = [], offset + own_context
            for cont in conts:  # token k of a continuation is predicted at the position before it
                cols = [offset + own_context - 1] + list(range(column, column + len(cont) - 1))
                row_spans.append((len(targets), len(cont)))
                reads += [read.setdefault((row, col), len(read)) for col in cols]  # the context's last token once
                targets += cont
                column += len(cont) - 1
            spans.append(row_spans)
        return cls(input_ids, position_ids, allowed, read, reads, targets, spans)


def _tree_layout(ctx: list[int], conts: list[list[int]], start: int = 0) -> tuple[list[int], list[int], list[int]]:
    """One row of a scoring batch: (tokens, position ids from ``start``, group) for the context followed
    by each continuation but its last token; group -1 is the context, m the m-th continuation."""
    tokens, positions, groups = list(ctx), list(range(start, start + len(ctx))), [-1] * len(ctx)
    for m, cont in enumerate(conts):
        tokens += cont[:-1]
        positions += range(start + len(ctx), start + len(ctx) + len(cont) - 1)
        groups += [m] * (len(cont) - 1)
    return tokens, positions, groups


def _sample(torch, logits, temperature: float, top_p: float, generators: list) -> Any:
    """One token per row from softmax(logits / temperature), restricted to the top-p nucleus."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # tokens after the nucleus is full
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.stack([torch.multinomial(row, 1, generator=g)[0] for row, g in zip(probs, generators)])


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
        self.base._attach(self.key, self.path)

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return self.base.apply_chat_template(messages)

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        self.load()
        return self.base._score_with(self.key, requests)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self.load()
        return self.base._generate_with(self.key, requests)

"""A transformers model once loaded: the weights, the tokenizer and what the backend reads from them.

:func:`load_model` loads a causal LM from a folder; :meth:`LoadedHF.around` wraps one already in memory
(a model being trained). Either way the result is one :class:`LoadedHF`, which also attaches LoRA
adapters (a new LoadedHF around the peft model), switches between them, computes a shared prefix's
key/value states and builds the key/value cache a batch decodes into. torch, transformers and peft are
imported only inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.backends.batching import CacheShape, rows_in_memory
from evalkit.backends.prefix import Tokens
from evalkit.errors import ModelError

KVStates = list[tuple[Any, Any]]  # every layer's (keys, values) for a batch of one


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """peft (0.21) calls a transformers property that transformers 5 deprecates; the warning is not the user's to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def cannot_load(path: Path, exc: Exception) -> ModelError:
    return ModelError(
        f"cannot load model from {path}: {exc}",
        fix="check that the folder holds a complete causal LM saved by save_pretrained",
    )


@dataclass(frozen=True)
class LoadOptions:
    """How a model folder is loaded: the weights' dtype, where they run (auto: a GPU when there is one),
    whether the model's own Python code may run, and whether pickle weights may be read."""

    dtype: str = "float32"
    device: str = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False


def load_tokenizer(path: Path, options: LoadOptions) -> Any:
    """The tokenizer saved in ``path`` (without the weights)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=options.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise cannot_load(path, exc) from None


def load_model(path: Path, tokenizer: Any, options: LoadOptions) -> LoadedHF:
    """The causal LM in ``path``, loaded as ``options`` say."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from evalkit.models import use_safetensors

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=getattr(torch, options.dtype),
            trust_remote_code=options.trust_remote_code,
            use_safetensors=use_safetensors(options.allow_pickle),
        )
    except (OSError, ValueError) as exc:
        raise cannot_load(path, exc) from None
    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)  # type: ignore[arg-type]
    return LoadedHF.around(model, tokenizer, load_s=time.perf_counter() - started)


@dataclass(frozen=True)
class LoadedHF:
    """A loaded model with its tokenizer, and the parts of it the backend calls apart."""

    model: Any  # the transformers model, or the peft model around it once an adapter is attached
    tokenizer: Any  # its pad token set (to the end token where it has none)
    dtype: str  # of the weights, as torch names it without "torch."
    load_s: float  # seconds loading the weights took (0 for a model handed over)
    decoder: Any  # the decoder stack and the vocabulary projection, called apart so logits are computed
    lm_head: Any  # only where scored (LoRA layers sit inside these modules: an attached adapter applies)
    text_config: Any  # the language model's own config (a multimodal model's text part)
    cache_kw: str  # what the model calls its key/value cache (transformers renamed it in 5.2x)
    start_id: int  # what an empty prompt is encoded as (the BOS token, else the end token)
    end_ids: frozenset[int]  # tokens that end a generated row
    adapters: Mapping[str, Path] = field(default_factory=dict)  # attached LoRA adapters: name -> folder

    @classmethod
    def around(cls, model: Any, tokenizer: Any, *, load_s: float = 0.0) -> LoadedHF:
        """``model`` put in evaluation mode, with what the backend needs read from it and ``tokenizer``."""
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        generation_config = getattr(inner, "generation_config", None)
        eos = generation_config.eos_token_id if generation_config is not None else None
        eos_ids = eos if isinstance(eos, list) else [eos]
        config = inner.config
        return cls(
            model=model,
            tokenizer=tokenizer,
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            load_s=load_s,
            decoder=inner.get_decoder(),
            lm_head=inner.get_output_embeddings(),
            text_config=getattr(config, "get_text_config", lambda: config)(),
            cache_kw="cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values",
            start_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
            end_ids=frozenset(t for t in [*eos_ids, tokenizer.eos_token_id, tokenizer.pad_token_id] if t is not None),
        )

    @property
    def device(self) -> Any:
        """Where the weights are now."""
        return next(self.model.parameters()).device

    def available_memory(self) -> int:
        """Bytes free now: GPU memory on a GPU, else the machine's available memory (2 GiB if unknown)."""
        import torch

        if self.device.type == "cuda":
            return torch.cuda.mem_get_info(self.device)[0]
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return 2 << 30

    def rows_in_memory(self, tokens: int) -> int:
        """How many rows of ``tokens`` tokens (shared prefix included) one batch may hold: their key/value
        cache and logits must fit in a share of the memory available now (GPU memory on a GPU)."""
        return rows_in_memory(tokens, self.cache_shape(), self.available_memory())

    def cache_shape(self) -> CacheShape:
        config = self.text_config
        attention_heads: int = getattr(config, "num_attention_heads", 32)
        return CacheShape(
            layers=getattr(config, "num_hidden_layers", 32),
            kv_heads=config.num_key_value_heads if getattr(config, "num_key_value_heads", None) else attention_heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // attention_heads,
            element_size=int(next(self.model.parameters()).element_size()),
            vocab_size=config.vocab_size,
        )

    # ------------------------------------------------------------------ adapters

    def with_adapter(self, name: str, path: Path, *, base: Path) -> LoadedHF:
        """This model with the LoRA adapter in ``path`` attached as ``name`` (once: attached already, it
        is returned as it is); ModelError when the adapter does not fit the model of folder ``base``."""
        if name in self.adapters:
            return self
        from peft import PeftModel

        model = self.model
        try:
            with peft_quietly():
                if isinstance(model, PeftModel):
                    model.load_adapter(str(path), adapter_name=name)
                else:
                    model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(
                f"cannot attach adapter {path} to model {base}: {exc}",
                fix="retrain the adapter for this base model (evalkit train SUITE --adapter NAME)",
            ) from None
        model.eval()
        return dataclasses.replace(self, model=model, adapters={**self.adapters, name: Path(path)})

    @contextlib.contextmanager
    def using(self, adapter: str | None) -> Iterator[None]:
        """Run with ``adapter`` active, or with every attached adapter disabled for the base model."""
        if not self.adapters:
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(adapter)
            yield

    # ------------------------------------------------------------------ key/value states

    def prefix_states(self, prefix: Tokens) -> KVStates:
        """Every layer's (keys, values) for ``prefix``, as a batch of one."""
        import torch

        device = self.device
        with torch.inference_mode():
            out = self.decoder(
                input_ids=torch.tensor([prefix], device=device),
                position_ids=torch.arange(len(prefix), device=device)[None],
                use_cache=True,
            )
        return [(keys, values) for keys, values, *_ in getattr(out, self.cache_kw)]

    def cache_after(self, states: KVStates | None, rows: int, capacity: int) -> Any:
        """A key/value cache for ``rows`` rows of up to ``capacity`` positions, holding the shared prefix's
        ``states`` when there are some (see evalkit.backends.kv_cache): each forward pass writes its new
        keys and values into it instead of concatenating. Models whose layers are not all full attention
        (sliding windows, linear attention) get transformers' own cache, which knows their layers."""
        config = self.text_config
        if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
            if not states:
                return None  # the model builds its own
            from transformers import DynamicCache

            return DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in states])
        from evalkit.backends.kv_cache import reserved_cache

        return reserved_cache(config.num_hidden_layers, rows, capacity, states)

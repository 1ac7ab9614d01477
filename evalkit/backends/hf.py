"""The transformers backend: shared-prefix choice scoring and batched greedy generation."""

from __future__ import annotations

import contextlib
import copy
import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalkit.backends.base import ChoiceRequest, ChoiceResult, GenerateRequest, GenerateResult, cut_at_stop
from evalkit.errors import ModelError

DEFAULT_GENERATE_BATCH = 32
TOKEN_BUDGET = 4096  # padded tokens per forward pass when the batch size is automatic
MAX_AUTO_BATCH = 32
MAX_CONTINUATION_BATCH = 64


@contextlib.contextmanager
def peft_quietly():
    """peft (0.21) calls a transformers property that transformers 5 deprecates; the warning is not the user's to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Split like lm-evaluation-harness: trailing spaces of the context move to the continuation,
    and the continuation is what encoding the whole adds after the context's tokens."""
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = tokenizer(context + continuation).input_ids
    context_ids = tokenizer(context).input_ids
    return context_ids, whole[len(context_ids):]


class HFBackend:
    """A causal LM loaded once from a local folder and shared by every suite and candidate."""

    def __init__(
        self,
        path: Path,
        *,
        fingerprint: str,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        batch_size: int | None = None,
        device: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from evalkit.models import effective_dtype

        hf_logging.disable_progress_bar()
        self.path = Path(path)
        self.dtype_name = effective_dtype(dtype)
        self.fingerprint = f"{fingerprint}:{self.dtype_name}"
        self.batch_size = batch_size
        torch_dtype = getattr(torch, self.dtype_name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True,
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model from {path}: {exc}",
                             fix="check that the folder holds a complete causal LM saved by save_pretrained") from None
        self.base_fingerprint = fingerprint
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(device)
        self._setup()

    @classmethod
    def from_model(cls, model, tokenizer, *, fingerprint: str, batch_size: int | None = None) -> "HFBackend":
        """A backend around an already loaded model (for example one being trained)."""
        backend = cls.__new__(cls)
        backend.path = Path(getattr(model, "name_or_path", "") or "<in memory>")
        backend.dtype_name = str(next(model.parameters()).dtype).removeprefix("torch.")
        backend.fingerprint = backend.base_fingerprint = fingerprint
        backend.batch_size = batch_size
        backend.tokenizer = tokenizer
        backend.model = model
        backend._setup()
        return backend

    def _setup(self) -> None:
        import torch

        self._adapters: dict[str, Path] = {}
        self._active: str | None = None
        self.model.eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._torch = torch
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        generation_config = getattr(inner, "generation_config", None)
        eos = generation_config.eos_token_id if generation_config is not None else None
        eos_ids = eos if isinstance(eos, list) else [eos]
        # transformers renamed `past_key_values` to `cache` (argument and output field) in 5.2x.
        forward_params = inspect.signature(inner.forward).parameters
        self._cache_kw = "cache" if "cache" in forward_params else "past_key_values"
        self._start_id = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        self._eos_ids = sorted({t for t in [*eos_ids, self.tokenizer.eos_token_id] if t is not None})
        self._end_ids = {*self._eos_ids, self.tokenizer.pad_token_id}

    @property
    def _device(self):
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ adapters

    def with_adapter(self, key: str, path: Path) -> "AdapterView":
        """This model with the LoRA adapter in ``path`` attached as ``key`` (loaded once, base weights shared)."""
        if key not in self._adapters:
            from peft import PeftModel

            try:
                with peft_quietly():
                    if isinstance(self.model, PeftModel):
                        self.model.load_adapter(str(path), adapter_name=key)
                    else:
                        self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=key)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise ModelError(f"cannot attach adapter {path} to model {self.path}: {exc}",
                                 fix="retrain the adapter for this base model (evalkit train SUITE --adapter NAME)") from None
            self.model.eval()
            self._adapters[key] = Path(path)
        return AdapterView(self, key)

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
            raise ModelError(f"model {self.path} has no chat template", fix="set `chat: false` for this candidate")
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    # ------------------------------------------------------------------ classify

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return encode_pair(self.tokenizer, context, continuation)

    def _batches(self, order: list[int], lengths: list[int], default: int = MAX_AUTO_BATCH) -> list[list[int]]:
        """Consecutive slices of ``order`` (longest first) holding about TOKEN_BUDGET padded tokens each."""
        batches, current = [], []
        for i in order:
            width = max([lengths[j] for j in current] + [lengths[i]])
            limit = self.batch_size or max(1, min(default, TOKEN_BUDGET // max(1, width)))
            if current and len(current) + 1 > limit:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def score_choices(self, requests: Sequence[ChoiceRequest], *, adapter: str | None = None) -> list[ChoiceResult]:
        """Log-likelihood of every continuation; each context runs once, continuations reuse its cache."""
        with self._using(adapter):
            return self._score_choices(requests)

    def _score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        encoded = []
        for r in requests:
            pairs = [self._encode_pair(r.context, c) for c in r.continuations]
            context_ids = pairs[0][0] or [self._start_id]
            for choice, (_, cont) in zip(r.continuations, pairs):
                if not cont:
                    raise ModelError(f"choice {choice!r} encodes to no tokens", fix="choices must be non-empty text")
            encoded.append((context_ids, [cont for _, cont in pairs]))
        lengths = [len(ctx) for ctx, _ in encoded]
        order = sorted(range(len(requests)), key=lambda i: -lengths[i])
        results: list[ChoiceResult | None] = [None] * len(requests)
        for batch in self._batches(order, lengths):
            for i, result in zip(batch, self._score_batch([encoded[i] for i in batch])):
                results[i] = result
        return results  # type: ignore[return-value]

    def _score_batch(self, batch: list[tuple[list[int], list[list[int]]]]) -> list[ChoiceResult]:
        torch = self._torch
        pad = self.tokenizer.pad_token_id
        width = max(len(ctx) for ctx, _ in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ctx, _) in enumerate(batch):  # left padding: every row's last token is at the end
            input_ids[row, width - len(ctx):] = torch.tensor(ctx)
            mask[row, width - len(ctx):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self._device
        input_ids, mask, positions = input_ids.to(device), mask.to(device), positions.to(device)
        logprobs = [[0.0] * len(conts) for _, conts in batch]
        greedy = [[True] * len(conts) for _, conts in batch]
        multi = [(row, c) for row, (_, conts) in enumerate(batch) for c, cont in enumerate(conts) if len(cont) > 1]
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             use_cache=bool(multi), logits_to_keep=1)
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()
            best = first.argmax(-1)
            for row, (_, conts) in enumerate(batch):
                for c, cont in enumerate(conts):
                    logprobs[row][c] = float(first[row, cont[0]])
                    greedy[row][c] = int(best[row]) == cont[0]
            for start in range(0, len(multi), MAX_CONTINUATION_BATCH):
                chunk = multi[start: start + MAX_CONTINUATION_BATCH]
                cache = getattr(out, self._cache_kw)
                if start + MAX_CONTINUATION_BATCH < len(multi):  # later chunks need the cache intact
                    cache = copy.deepcopy(cache)
                rows = torch.tensor([row for row, _ in chunk], device=device)
                cache.batch_select_indices(rows)
                tails = [batch[row][1][c] for row, c in chunk]
                steps = max(len(t) - 1 for t in tails)
                cont_ids = torch.full((len(chunk), steps), pad, dtype=torch.long)
                cont_mask = torch.zeros((len(chunk), steps), dtype=torch.long)
                for k, tail in enumerate(tails):
                    cont_ids[k, : len(tail) - 1] = torch.tensor(tail[:-1])
                    cont_mask[k, : len(tail) - 1] = 1
                cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)
                cont_positions = mask[rows].sum(-1, keepdim=True) + torch.arange(steps, device=device)
                logits = self.model(
                    input_ids=cont_ids, attention_mask=torch.cat([mask[rows], cont_mask], dim=-1),
                    position_ids=cont_positions, **{self._cache_kw: cache},
                ).logits
                step_logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
                for k, ((row, c), tail) in enumerate(zip(chunk, tails)):
                    targets = torch.tensor(tail[1:])
                    here = step_logprobs[k, : len(targets)]
                    logprobs[row][c] += float(here.gather(-1, targets[:, None]).sum())
                    greedy[row][c] = greedy[row][c] and bool((here.argmax(-1) == targets).all())
        return [
            ChoiceResult(
                logprobs=tuple(logprobs[row]), is_greedy=tuple(greedy[row]),
                context_tokens=len(ctx), continuation_tokens=tuple(len(c) for c in conts),
            )
            for row, (ctx, conts) in enumerate(batch)
        ]

    # ------------------------------------------------------------------ generate

    def generate(self, requests: Sequence[GenerateRequest], *, adapter: str | None = None) -> list[GenerateResult]:
        """Greedy decoding in length-sorted batches; a row leaves its batch once it stops."""
        with self._using(adapter):
            return self._generate(requests)

    def _generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        encoded = [self.tokenizer(r.prompt).input_ids or [self._start_id] for r in requests]
        results: list[GenerateResult | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i in sorted(range(len(requests)), key=lambda i: -len(encoded[i])):
            r = requests[i]
            groups.setdefault((r.max_new_tokens, r.stop, r.temperature, r.top_p), []).append(i)
        lengths = [len(ids) for ids in encoded]
        for (max_new_tokens, stop, temperature, top_p), indices in groups.items():
            for batch in self._batches(indices, lengths, default=DEFAULT_GENERATE_BATCH):
                sampling = None if temperature == 0 else (temperature, top_p, [requests[i].seed for i in batch])
                texts = self._generate_batch([encoded[i] for i in batch], max_new_tokens, stop, sampling)
                for i, (text, n_out) in zip(batch, texts):
                    results[i] = GenerateResult(text=text, prompt_tokens=len(encoded[i]), output_tokens=n_out)
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch: list[list[int]], max_new_tokens: int, stop: tuple[str, ...],
                        sampling: tuple[float, float, list[int]] | None = None) -> list[tuple[str, int]]:
        """Decode one left-padded batch; ``sampling`` = (temperature, top_p, one seed per row), else greedy."""
        torch = self._torch
        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):  # left padding
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self._device
        input_ids, mask, positions = input_ids.to(device), mask.to(device), positions.to(device)
        generated: list[list[int]] = [[] for _ in batch]
        texts = [""] * len(batch)
        active = list(range(len(batch)))  # original row of each position in the running batch
        generators = []
        if sampling is not None:  # one stream per row: its samples do not depend on the batch around it
            for seed in sampling[2]:
                generators.append(torch.Generator(device=device))
                generators[-1].manual_seed(seed)
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             use_cache=True, logits_to_keep=1)
            cache = getattr(out, self._cache_kw)
            next_pos = positions[:, -1] + 1
            for step in range(max_new_tokens):
                if sampling is None:
                    tokens = out.logits[:, -1].argmax(-1)
                else:
                    tokens = _sample(torch, out.logits[:, -1], sampling[0], sampling[1], [generators[r] for r in active])
                token_list = tokens.tolist()
                keep = []
                for k, row in enumerate(active):
                    token = token_list[k]
                    if token in self._end_ids:
                        continue
                    generated[row].append(token)
                    texts[row] = self.tokenizer.decode(generated[row], skip_special_tokens=True)
                    if not any(s and s in texts[row] for s in stop):
                        keep.append(k)
                if not keep or step == max_new_tokens - 1:
                    break
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    tokens, mask, next_pos = tokens[index], mask[index], next_pos[index]
                    active = [active[k] for k in keep]
                mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long, device=device)], dim=-1)
                out = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                                 use_cache=True, **{self._cache_kw: cache})
                cache = getattr(out, self._cache_kw)
                next_pos = next_pos + 1
        return [(cut_at_stop(text, stop), len(ids)) for text, ids in zip(texts, generated)]


def _sample(torch, logits, temperature: float, top_p: float, generators: list) -> Any:
    """One token per row from softmax(logits / temperature), restricted to the top-p nucleus."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # tokens after the nucleus is full
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.stack([torch.multinomial(row, 1, generator=g)[0] for row, g in zip(probs, generators)])


class AdapterView:
    """The shared base model seen through one attached LoRA adapter (the Backend protocol)."""

    def __init__(self, base: HFBackend, key: str) -> None:
        self.base = base
        self.key = key
        self.fingerprint = f"{base.fingerprint}+{key}"
        self.tokenizer = base.tokenizer

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return self.base.apply_chat_template(messages)

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        return self.base.score_choices(requests, adapter=self.key)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self.base.generate(requests, adapter=self.key)

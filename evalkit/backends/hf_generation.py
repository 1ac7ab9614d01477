"""Batched decoding on a loaded model: one left-padded batch, greedy or sampled, a row leaving the batch
(and the key/value cache) once it stops."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.backends.base import GenerateRequest, GenerateResult, cut_at_stop
from evalkit.backends.hf_model import KVStates, LoadedHF

Sampling = tuple[float, float, list[int]]  # (temperature, top_p, one seed per row)
Settings = tuple[int, tuple[str, ...], float, float]  # (max_new_tokens, stop, temperature, top_p)


def settings_of(request: GenerateRequest) -> Settings:
    """What rows must share to decode in one batch."""
    return (request.max_new_tokens, request.stop, request.temperature, request.top_p)


def generate_planned(
    loaded: LoadedHF,
    requests: Sequence[GenerateRequest],
    encoded: Sequence[list[int]],
    planned: Sequence[tuple[Settings, list[int]]],
    shared: int = 0,
    states: KVStates | None = None,
) -> Iterator[tuple[int, GenerateResult]]:
    """(request index, result) for each row of the ``planned`` batches (see
    :func:`evalkit.backends.batching.generation_batches`), which continue ``shared`` prefix tokens."""
    for (max_new_tokens, stop, temperature, top_p), batch in planned:
        sampling = None if temperature == 0 else (temperature, top_p, [requests[i].seed for i in batch])
        own = [encoded[i][shared:] for i in batch]
        texts = generate_batch(loaded, own, max_new_tokens, stop, sampling, shared, states)
        for i, (text, n_out) in zip(batch, texts):
            yield i, GenerateResult(text=text, prompt_tokens=len(encoded[i]), output_tokens=n_out)


def generate_batch(
    loaded: LoadedHF,
    batch: list[list[int]],
    max_new_tokens: int,
    stop: tuple[str, ...],
    sampling: Sampling | None = None,
    shared: int = 0,
    states: KVStates | None = None,
) -> list[tuple[str, int]]:
    """Decode one left-padded batch; ``sampling`` = (temperature, top_p, one seed per row), else greedy.
    The rows continue ``shared`` prefix tokens whose key/value ``states`` are already computed. Each
    row's (text cut before its first stop string, tokens generated)."""
    import torch

    input_ids, mask, positions = left_padded(loaded, batch, shared)
    rows = _Rows(
        loaded.tokenizer, loaded.end_ids, stop, list(range(len(batch))), [[] for _ in batch], [""] * len(batch)
    )
    cache = loaded.cache_after(states, len(batch), shared + input_ids.shape[1] + max_new_tokens)
    with torch.inference_mode():
        out = loaded.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{loaded.cache_kw: cache},
        )
        _decode(loaded, out, mask, positions[:, -1] + 1, max_new_tokens, rows, _picker(loaded, sampling))
    return [(cut_at_stop(text, stop), len(ids)) for text, ids in zip(rows.texts, rows.generated)]


@dataclass
class _Rows:
    """The rows of a batch being decoded: what each has generated, and which still go on."""

    tokenizer: Any
    end_ids: frozenset[int]
    stop: tuple[str, ...]
    active: list[int]  # original row of each position in the running batch
    generated: list[list[int]]  # per original row
    texts: list[str]  # per original row, decoded so far

    def still_going(self, tokens: list[int]) -> list[int]:
        """Append each active row's new token and text; the positions (in ``active``) of the rows that go
        on: neither an end token nor a stop string yet."""
        keep = []
        for k, row in enumerate(self.active):
            if tokens[k] in self.end_ids:
                continue
            self.generated[row].append(tokens[k])
            self.texts[row] = self.tokenizer.decode(self.generated[row], skip_special_tokens=True)
            if not any(s and s in self.texts[row] for s in self.stop):
                keep.append(k)
        return keep


def _decode(
    loaded: LoadedHF,
    out: Any,
    mask: Any,
    next_pos: Any,
    max_new_tokens: int,
    rows: _Rows,
    pick: Callable[[Any, list[int]], Any],
) -> None:
    """The decoding steps after the prompt pass ``out``: pick each active row's token, drop the rows that
    stopped (from the cache too), and run the model on the new tokens."""
    import torch

    device = loaded.device
    cache = getattr(out, loaded.cache_kw)
    for step in range(max_new_tokens):
        tokens = pick(out.logits[:, -1], rows.active)
        keep = rows.still_going(tokens.tolist())
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(rows.active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            tokens, mask, next_pos = tokens[index], mask[index], next_pos[index]
            rows.active = [rows.active[k] for k in keep]
        mask = torch.cat([mask, torch.ones((len(rows.active), 1), dtype=torch.long, device=device)], dim=-1)
        out = loaded.model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            use_cache=True,
            **{loaded.cache_kw: cache},
        )
        cache = getattr(out, loaded.cache_kw)
        next_pos = next_pos + 1


def _picker(loaded: LoadedHF, sampling: Sampling | None) -> Callable[[Any, list[int]], Any]:
    """(last logits, active rows) -> one token per active row: the argmax, or sampled from each row's own
    random stream (so its samples do not depend on the batch around it)."""
    if sampling is None:
        return lambda logits, active: logits.argmax(-1)
    import torch

    temperature, top_p, seeds = sampling
    generators = [torch.Generator(device=loaded.device).manual_seed(seed) for seed in seeds]
    return lambda logits, active: sample(logits, temperature, top_p, [generators[r] for r in active])


def left_padded(loaded: LoadedHF, batch: list[list[int]], shared: int = 0) -> tuple[Any, Any, Any]:
    """(input ids, attention mask, position ids) of a left-padded batch that continues ``shared``
    prefix tokens (the mask covers them too), on the model's device."""
    import torch

    device = loaded.device
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), loaded.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
    positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([torch.ones((len(batch), shared), dtype=torch.long), mask], dim=-1)
    return input_ids.to(device), mask.to(device), positions.to(device)


def sample(logits: Any, temperature: float, top_p: float, generators: list) -> Any:
    """One token per row from softmax(logits / temperature), restricted to the top-p nucleus."""
    import torch

    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # tokens after the nucleus is full
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.stack([torch.multinomial(row, 1, generator=g)[0] for row, g in zip(probs, generators)])

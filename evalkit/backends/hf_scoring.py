"""Choice scoring in one forward pass per batch: every continuation of every row, each token computed once.

A row is laid out as its context followed by its continuations side by side (all but each one's last
token, which is only predicted). A tree-shaped attention mask lets a continuation token see the context
and the earlier tokens of its own continuation, and position ids restart after the context for each
continuation, so each continuation is scored exactly as if it followed the context alone. The first
``shared`` context tokens, the same in every row, are not laid out: their key/value states are computed
once and every token of the batch sees them. Rows are left-padded; the vocabulary projection runs only
where a token is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.backends.base import ChoiceRequest, ChoiceResult
from evalkit.backends.encoding import encode_choices
from evalkit.backends.hf_model import KVStates, LoadedHF
from evalkit.errors import ModelError

EncodedChoice = tuple[list[int], list[list[int]]]  # (context ids, each continuation's ids)


def encode_requests(loaded: LoadedHF, requests: Sequence[ChoiceRequest]) -> list[EncodedChoice]:
    """Each request's context and continuations in token ids (an empty context as the start token);
    ModelError for a choice that encodes to no tokens."""
    encoded = []
    for r in requests:
        context_ids, continuations = encode_choices(loaded.tokenizer, r.context, r.continuations)
        for choice, cont in zip(r.continuations, continuations):
            if not cont:
                raise ModelError(f"choice {choice!r} encodes to no tokens", fix="choices must be non-empty text")
        encoded.append((context_ids or [loaded.start_id], continuations))
    return encoded


def score_batch(
    loaded: LoadedHF, batch: list[EncodedChoice], shared: int = 0, states: KVStates | None = None
) -> list[ChoiceResult]:
    """Every continuation of every row of ``batch`` scored, the rows continuing ``shared`` prefix tokens
    whose key/value ``states`` are already computed."""
    import torch

    layout = ScoringLayout.of(batch, shared, loaded.tokenizer.pad_token_id)
    device = loaded.device
    width = layout.input_ids.shape[1]
    prefix = {loaded.cache_kw: loaded.cache_after(states, len(batch), shared + width)} if shared else {}
    with torch.inference_mode():
        hidden = loaded.decoder(
            input_ids=layout.input_ids.to(device),
            attention_mask=layout.allowed[:, None].to(device),
            position_ids=layout.position_ids.to(device),
            use_cache=False,
            **prefix,
        ).last_hidden_state
        where = torch.tensor(list(layout.read), device=device)
        logprobs_all = torch.log_softmax(loaded.lm_head(hidden[where[:, 0], where[:, 1]]).float(), dim=-1).cpu()
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


@dataclass
class ScoringLayout:
    """The tensors and bookkeeping of one scoring batch (see :func:`score_batch`)."""

    input_ids: Any
    position_ids: Any
    allowed: Any  # (rows, width, shared + width): which tokens each token may attend to
    read: dict[tuple[int, int], int]  # (row, column) where the model's prediction is read -> its index
    reads: list[int]  # per scored token: which read predicts it
    targets: list[int]  # and the token it should give
    spans: list[list[tuple[int, int]]]  # per row and continuation: (first, count) into the targets

    @classmethod
    def of(cls, batch: list[EncodedChoice], shared: int, pad: int) -> ScoringLayout:
        import torch

        layouts = [tree_layout(ctx[shared:], conts, start=shared) for ctx, conts in batch]
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


def tree_layout(ctx: list[int], conts: list[list[int]], start: int = 0) -> tuple[list[int], list[int], list[int]]:
    """One row of a scoring batch: (tokens, position ids from ``start``, group) for the context followed
    by each continuation but its last token; group -1 is the context, m the m-th continuation."""
    tokens, positions, groups = list(ctx), list(range(start, start + len(ctx))), [-1] * len(ctx)
    for m, cont in enumerate(conts):
        tokens += cont[:-1]
        positions += range(start + len(ctx), start + len(ctx) + len(cont) - 1)
        groups += [m] * (len(cont) - 1)
    return tokens, positions, groups

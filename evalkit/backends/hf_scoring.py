"""Choice scoring in one forward pass per batch: every continuation of every row, each token computed once.

A row is laid out as its context followed by its continuations side by side (all but each one's last
token, which is only predicted). A tree-shaped attention mask lets a continuation token see the context
and the earlier tokens of its own continuation, and position ids restart after the context for each
continuation, so each continuation is scored exactly as if it followed the context alone. The first
``shared`` context tokens, the same in every row, are not laid out: their key/value states are computed
once and every token of the batch sees them. Rows are left-padded; the vocabulary projection runs only
where a token is scored.

A batch row may also be a *pack*: several requests whose contexts share a beginning (a row and the
content-free inputs of its own demos, say), laid out as one tree. The common beginning comes once, each
request's own context tokens follow it as a branch that sees the beginning and itself, and each
continuation branches off its own context. A pack scores every member exactly as if it were laid out
alone, and many packs batch together where each would otherwise need a prefix pass of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.backends.base import ChoiceRequest, ChoiceResult
from evalkit.backends.batching import common_beginning
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
    return score_packs(loaded, [[row] for row in batch], shared, states)


def score_packs(
    loaded: LoadedHF, packs: list[list[EncodedChoice]], shared: int = 0, states: KVStates | None = None
) -> list[ChoiceResult]:
    """Every continuation of every member of every pack scored (one batch row a pack; the results in
    pack order, then member order), continuing ``shared`` prefix tokens whose ``states`` are computed."""
    import torch

    batch = [member for pack in packs for member in pack]
    layout = ScoringLayout.of(packs, shared, loaded.tokenizer.pad_token_id)
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
    def of(cls, packs: list[list[EncodedChoice]], shared: int, pad: int) -> ScoringLayout:
        """The layout of ``packs`` (a batch row each: one request, or several laid out as one tree)."""
        import torch

        trees = [tree_layout(pack, shared) for pack in packs]
        width = max(len(tree.tokens) for tree in trees)
        input_ids = torch.full((len(packs), width), pad, dtype=torch.long)
        position_ids = torch.zeros((len(packs), width), dtype=torch.long)
        allowed = torch.zeros((len(packs), width, shared + width), dtype=torch.bool)
        allowed[:, :, :shared] = True  # every token sees the shared prefix
        allowed[:, :, shared:] = torch.eye(width, dtype=torch.bool)  # padding sees only itself
        read: dict[tuple[int, int], int] = {}
        reads: list[int] = []
        targets: list[int] = []
        spans: list[list[tuple[int, int]]] = []
        for row, (pack, tree) in enumerate(zip(packs, trees)):
            offset = width - len(tree.tokens)
            input_ids[row, offset:] = torch.tensor(tree.tokens)
            position_ids[row, offset:] = torch.tensor(tree.positions)
            allowed[row, offset:, shared + offset :] = tree.mask(torch)
            for (_, conts), columns in zip(pack, tree.reads):
                row_spans = []
                for cont, cols in zip(conts, columns):  # token k of a continuation is predicted before it
                    row_spans.append((len(targets), len(cont)))
                    reads += [read.setdefault((row, offset + col), len(read)) for col in cols]
                    targets += cont
                spans.append(row_spans)
        return cls(input_ids, position_ids, allowed, read, reads, targets, spans)


@dataclass
class Tree:
    """One batch row laid out: tokens, position ids, and for each token its member (-1: the beginning the
    members share) and branch (-1: the member's context, m: its m-th continuation); ``reads``: per member
    and continuation, the columns whose predictions score the continuation's tokens."""

    tokens: list[int]
    positions: list[int]
    member: list[int]
    branch: list[int]
    reads: list[list[list[int]]]

    def mask(self, torch: Any) -> Any:
        """Which token may attend to which: an earlier one of the shared beginning, of its own member's
        context, or of its own continuation."""
        member, branch = torch.tensor(self.member), torch.tensor(self.branch)
        index = torch.arange(len(self.tokens))
        same_member = member[None, :] == member[:, None]
        visible = (member[None, :] == -1) | (
            same_member & ((branch[None, :] == -1) | (branch[None, :] == branch[:, None]))
        )
        return (index[None, :] <= index[:, None]) & visible


def tree_layout(pack: Sequence[EncodedChoice], shared: int = 0) -> Tree:
    """One batch row: the members' common beginning once (after the ``shared`` prefix), then each member's
    own context tokens and each of its continuations but their last token (which is only predicted);
    position ids go on from ``shared`` as if every member stood alone."""
    common = common_beginning(pack, shared)
    start = shared + common
    first = pack[0][0]
    tree = Tree(list(first[shared:start]), list(range(shared, start)), [-1] * common, [-1] * common, [])
    for m, (ctx, conts) in enumerate(pack):
        own = ctx[start:]
        tree.tokens += own
        tree.positions += range(start, len(ctx))
        tree.member += [m] * len(own)
        tree.branch += [-1] * len(own)
        last, columns = len(tree.tokens) - 1, []
        for b, cont in enumerate(conts):
            columns.append([last] + list(range(len(tree.tokens), len(tree.tokens) + len(cont) - 1)))
            tree.tokens += cont[:-1]
            tree.positions += range(len(ctx), len(ctx) + len(cont) - 1)
            tree.member += [m] * (len(cont) - 1)
            tree.branch += [b] * (len(cont) - 1)
        tree.reads.append(columns)
    return tree

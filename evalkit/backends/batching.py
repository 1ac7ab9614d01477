"""Batch planning for the in-process backend, as pure functions of token counts.

A call's rows are first grouped by the token prefix they share (:func:`evalkit.backends.prefix.plan_prefixes`);
within a group they are sorted longest first and cut into batches, each padded to its first row's length;
answers computed batch by batch go back in request order (:func:`in_request_order`). How many rows a batch
may hold comes from a fixed ``batch_size``, a token budget, and the memory a row's key/value cache and
logits take (:func:`rows_in_memory`). Nothing here touches a model or imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from evalkit.backends.prefix import common_prefix_length

TOKEN_BUDGET = 4096  # padded tokens per forward pass when the batch size is automatic
MAX_AUTO_BATCH = 64  # rows per scoring pass (TOKEN_BUDGET usually binds first)
MAX_GENERATE_BATCH = 128  # decoding steps are small, so generation gains from many rows per step
MEMORY_SHARE = 0.25  # of the memory available now, at most this much for one batch's cache and logits
MIN_FILL = 0.9  # a row shorter than this share of its batch's longest starts a new batch...
MIN_SPLIT = 512  # ...once the batch holds this many padded tokens (smaller matrix products run far slower)

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
Lengths = Mapping[int, int] | Sequence[int]  # a row's length, by its index
ScoringRow = tuple[Sequence[int], Sequence[Sequence[int]]]  # (context ids, each continuation's ids)


@dataclass(frozen=True)
class CacheShape:
    """What one token of one row costs in a model's key/value cache, and the size of its logits."""

    layers: int
    kv_heads: int
    head_dim: int
    element_size: int  # bytes per value of the weights' dtype
    vocab_size: int

    def row_bytes(self, tokens: int) -> int:
        """Bytes of one row of ``tokens`` tokens: keys and values in every layer, plus float32 logits."""
        return tokens * 2 * self.layers * self.kv_heads * self.head_dim * self.element_size + 4 * self.vocab_size


def rows_in_memory(tokens: int, shape: CacheShape, available: int) -> int:
    """How many rows of ``tokens`` tokens one batch may hold: their key/value cache and logits fit in
    MEMORY_SHARE of the ``available`` bytes; at least one row and at most MAX_GENERATE_BATCH."""
    return max(1, min(MAX_GENERATE_BATCH, int(MEMORY_SHARE * available) // shape.row_bytes(tokens)))


def longest_first(rows: Iterable[int], lengths: Lengths) -> list[int]:
    """``rows`` sorted by length, longest first; rows of equal length keep their order."""
    return sorted(rows, key=lambda i: -lengths[i])


def plan_batches(
    order: Sequence[int],
    lengths: Lengths,
    *,
    batch_size: int | None = None,
    most: int = MAX_AUTO_BATCH,
    min_fill: float = MIN_FILL,
) -> list[list[int]]:
    """Consecutive slices of ``order`` (longest first), each padded to its first row's length.

    A fixed ``batch_size`` gives slices of that many rows. Otherwise a slice holds at most ``most`` rows
    and TOKEN_BUDGET padded tokens, and once it holds MIN_SPLIT padded tokens, a row shorter than
    ``min_fill`` of the slice's first starts a new slice (for scoring, padding then stays under about a
    tenth of the tokens, while short rows still make matrix products large enough to run near the
    machine's rate)."""
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if current is not None:
            width = lengths[current[0]]
            if batch_size:
                full = len(current) >= batch_size
            else:
                full = (
                    len(current) >= most
                    or (len(current) + 1) * width > TOKEN_BUDGET
                    or (lengths[i] < min_fill * width and len(current) * width >= MIN_SPLIT)
                )
            if not full:
                current.append(i)
                continue
        batches.append([i])
    return batches


def scoring_length(row: ScoringRow, shared: int) -> int:
    """The tokens a scoring row lays out: its context after the ``shared`` prefix, then every continuation
    but its last token (which is only predicted)."""
    context, continuations = row
    return len(context) - shared + sum(len(c) - 1 for c in continuations)


def common_beginning(pack: Sequence[ScoringRow], shared: int = 0) -> int:
    """Context tokens after ``shared`` that every row of ``pack`` begins with (none for a pack of one),
    leaving each row at least its last context token of its own (where its answer is read)."""
    if len(pack) < 2:
        return 0
    first = pack[0][0]
    n = min(len(context) for context, _ in pack) - 1
    n = min(n, *(common_prefix_length(first, context) for context, _ in pack[1:]))
    return max(0, n - shared)


def pack_length(pack: Sequence[ScoringRow]) -> int:
    """The tokens a pack of scoring rows lays out: the beginning its contexts share once, then each row's
    own context tokens and continuations (see evalkit.backends.hf_scoring.tree_layout)."""
    common = common_beginning(pack)
    return common + sum(scoring_length(row, common) for row in pack)


def pack_batches(packs: Sequence[Sequence[ScoringRow]], *, batch_size: int | None = None) -> list[list[int]]:
    """Batches of the indices of ``packs`` (rows laid out as packs, continuing no prefix), longest first."""
    lengths = [pack_length(pack) for pack in packs]
    return plan_batches(longest_first(range(len(packs)), lengths), lengths, batch_size=batch_size)


def scoring_batches(
    rows: Mapping[int, ScoringRow],
    shared: int,
    *,
    batch_size: int | None = None,
    fits: Callable[[int], int] = lambda tokens: MAX_AUTO_BATCH,
) -> list[list[int]]:
    """Batches of the indices of ``rows`` (which continue ``shared`` prefix tokens), longest first.
    ``fits(tokens)``: how many rows of ``tokens`` tokens, prefix included, memory allows; it bounds the
    batches only when there is a prefix (every row of the batch attends to its states)."""
    if not rows:
        return []
    lengths = {i: scoring_length(row, shared) for i, row in rows.items()}
    order = longest_first(rows, lengths)
    most = min(MAX_AUTO_BATCH, fits(shared + lengths[order[0]])) if shared else MAX_AUTO_BATCH
    return plan_batches(order, lengths, batch_size=batch_size, most=most)


def by_settings(order: Iterable[int], settings: Callable[[int], K]) -> dict[K, list[int]]:
    """``order`` split by each row's decoding ``settings``, keeping the order within each (and the order
    in which the settings first appear)."""
    groups: dict[K, list[int]] = {}
    for i in order:
        groups.setdefault(settings(i), []).append(i)
    return groups


def generation_batches(
    lengths: Mapping[int, int],
    settings: Callable[[int], K],
    *,
    batch_size: int | None = None,
    fits: Callable[[int, K], int] = lambda tokens, key: MAX_GENERATE_BATCH,
) -> list[tuple[K, list[int]]]:
    """(settings, batch) for the rows of ``lengths`` (prompt tokens after any shared prefix): rows sorted
    longest first, split by their decoding ``settings``, then cut into batches of at most
    ``fits(longest length, settings)`` rows. Padding costs only the prompt pass while every decoding step
    gains from each row in the batch, so a short row never starts a batch of its own."""
    planned: list[tuple[K, list[int]]] = []
    for key, indices in by_settings(longest_first(lengths, lengths), settings).items():
        most = fits(lengths[indices[0]], key)
        planned += [
            (key, batch) for batch in plan_batches(indices, lengths, batch_size=batch_size, most=most, min_fill=0.0)
        ]
    return planned


def in_request_order(n: int, answered: Iterable[tuple[int, T]]) -> list[T]:
    """The answers of ``answered`` ((request index, answer) in any order) as a list in request order;
    a ValueError names the requests left without an answer."""
    results: list[T | None] = [None] * n
    filled = [False] * n
    for i, answer in answered:
        results[i], filled[i] = answer, True
    missing = [i for i, done in enumerate(filled) if not done]
    if missing:
        raise ValueError(f"no answer for request(s) {missing[:10]} of {n}")
    return results  # type: ignore[return-value]

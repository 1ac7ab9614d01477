"""Token prefixes that the rows of one call share, so a backend computes each one once.

Few-shot examples, instructions, a system turn and a chat template's header make long prompts whose
beginning is the same for every row of a candidate. :func:`plan_prefixes` finds those beginnings:

* it works on the token ids of each row's own tokenisation (the whole prompt, encoded as it is scored),
  never on text, so a shared prefix is a token prefix of every row by construction: where a text prefix
  tokenises differently at its end (a space merged into the next word, say), the shared run simply stops
  at the last token the rows agree on;
* it sorts the rows by their token ids, so rows with a common beginning sit next to each other, and walks
  them in that order: a row joins the current group while the group's common prefix stays at least
  ``MIN_SHARED`` tokens and keeps at least half its length (a row that shares only a chat header with a
  group of few-shot prompts starts its own group instead of shortening theirs);
* every row keeps at least its last token outside the prefix, because that is where its answer is read;
* a prefix an earlier call computed (``stored``) is reused when it is nearly as long as the group's own:
  the tokens it leaves to every row cost less than computing the longer prefix once (a robustness
  search asks for a few changed rows at a time, and its few-shot examples stay the same); a row that
  shares it with no other row of the call takes it when it is at least half the row (a short stored
  instruction before demos of the row's own saves little, and such rows batch better without it); every
  row that continues the same stored prefix joins one group;
* where a call holds many small groups (demos of each row's own, each row with its content-free
  calibration inputs), :func:`packed_groups` lays each group out as one pack instead of computing its
  prefix on its own (see :mod:`evalkit.backends.hf_scoring`).

:class:`PrefixStore` keeps computed prefixes (their key/value states) for later calls, least recently
used first out, within a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_SHARED = 16  # tokens: a shorter common prefix is not worth a forward pass of its own
KEEP_SHARE = 0.5  # a row joins a group only if the group's prefix keeps at least this share of its length
STORE_BYTES = 256 << 20  # key/value states of computed prefixes kept for later calls
PACK_ROWS = 8  # a group of at most this many rows is laid out as one pack when a call holds several

Tokens = tuple[int, ...]


@dataclass
class PrefixGroup:
    """Rows (indices into a call's rows) that continue from one shared ``prefix`` (empty: none)."""

    prefix: Tokens
    rows: list[int] = field(default_factory=list)
    stored: bool = False  # the prefix comes from an earlier call


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _runs(sequences: Sequence[Sequence[int]], min_shared: int) -> list[tuple[int, list[int]]]:
    """Rows in token order, cut into runs: (length of the run's common prefix, its rows)."""
    runs: list[tuple[int, list[int]]] = []
    previous: Sequence[int] = ()
    for i in sorted(range(len(sequences)), key=lambda i: tuple(sequences[i])):
        tokens = sequences[i]
        if runs:
            shared, rows = runs[-1]
            n = min(shared, common_prefix_length(previous, tokens), len(tokens) - 1)
            if n >= min_shared and n >= KEEP_SHARE * shared:
                rows.append(i)
                runs[-1] = (n, rows)
                previous = tokens
                continue
        runs.append((len(tokens) - 1, [i]))
        previous = tokens
    return runs


def _longest_stored(rows: list[int], sequences: Sequence[Sequence[int]], stored: Sequence[Tokens]) -> Tokens:
    """The longest stored prefix that every row continues (with at least one token of its own)."""
    best: Tokens = ()
    for prefix in stored:
        n = len(prefix)
        if n > len(best) and all(len(sequences[i]) > n and tuple(sequences[i][:n]) == prefix for i in rows):
            best = prefix
    return best


def plan_prefixes(
    sequences: Sequence[Sequence[int]], stored: Sequence[Tokens] = (), min_shared: int = MIN_SHARED
) -> list[PrefixGroup]:
    """Groups of rows with the prefix each group computes once; rows that share nothing worth it come
    last, in one group with the empty prefix."""
    groups: list[PrefixGroup] = []
    continuing: dict[Tokens, PrefixGroup] = {}  # rows that continue a stored prefix, one group per prefix
    alone = PrefixGroup(())
    for shared, rows in _runs(sequences, min_shared):
        known = _longest_stored(rows, sequences, [s for s in stored if len(s) >= min_shared])
        alone_worth = len(rows) == 1 and len(known) >= KEEP_SHARE * (len(sequences[rows[0]]) - 1)
        if known and (alone_worth or (len(rows) > 1 and (shared - len(known)) * len(rows) <= shared)):
            continuing.setdefault(known, PrefixGroup(known, stored=True)).rows.extend(rows)
        elif len(rows) == 1:
            alone.rows += rows
        else:
            groups.append(PrefixGroup(tuple(sequences[rows[0]][:shared]), rows))
    groups += continuing.values()
    if alone.rows:
        groups.append(alone)
    return groups


def packed_groups(groups: list[PrefixGroup]) -> tuple[list[PrefixGroup], list[list[int]]]:
    """(the groups whose prefix is computed once, the rows laid out as packs): when a call holds several
    small groups (PACK_ROWS rows at most, a prefix of their own: a row with the content-free inputs of its
    own demos, say), each group is laid out as one pack instead, and the packs batch together, as do the
    rows that share nothing. A prefix pass per small group would run a batch of one each time, and keep
    states no later call asks for. A call with one such group computes its prefix and keeps it."""
    small = [g for g in groups if g.prefix and not g.stored and len(g.rows) <= PACK_ROWS]
    if len(small) < 2:
        return groups, []
    packed = {id(g) for g in small}
    packs = [g.rows for g in small]
    packs += [[i] for g in groups if not g.prefix for i in g.rows]  # rows that share nothing: a pack of one each
    return [g for g in groups if g.prefix and id(g) not in packed], packs


class PrefixStore:
    """Computed prefixes by key, least recently used dropped first once ``budget`` bytes are held (a
    budget of 0 holds nothing: for a model whose weights may change between calls)."""

    def __init__(self, budget: int = STORE_BYTES) -> None:
        self.budget = budget
        self._entries: OrderedDict[tuple[Hashable, Tokens], tuple[Any, int]] = OrderedDict()

    def prefixes(self, owner: Hashable) -> list[Tokens]:
        """The prefixes held for ``owner`` (for example the adapter they were computed with)."""
        return [tokens for key, tokens in self._entries if key == owner]

    def get(self, owner: Hashable, tokens: Tokens) -> Any:
        entry = self._entries.get((owner, tokens))
        if entry is None:
            return None
        self._entries.move_to_end((owner, tokens))
        return entry[0]

    def put(self, owner: Hashable, tokens: Tokens, value: Any, nbytes: int) -> None:
        if nbytes > self.budget:
            return
        self._entries[(owner, tokens)] = (value, nbytes)
        self._entries.move_to_end((owner, tokens))
        while sum(size for _, size in self._entries.values()) > self.budget:
            self._entries.popitem(last=False)

    def computed(
        self, owner: Hashable, tokens: Tokens, compute: Callable[[Tokens], Any], nbytes: Callable[[Any], int]
    ) -> Any:
        """The value held for ``owner`` and ``tokens``, else ``compute(tokens)``, held for later calls
        (``nbytes`` of it) within the budget."""
        value = self.get(owner, tokens)
        if value is None:
            value = compute(tokens)
            self.put(owner, tokens, value, nbytes(value))
        return value

    def clear(self) -> None:
        self._entries.clear()

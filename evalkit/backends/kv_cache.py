"""A key/value cache for batched decoding that writes into room reserved up front.

transformers' ``DynamicCache`` grows by concatenation: every decoding step copies every row's whole
cache (shared prefix included) in every layer, which took a fifth of the time of the demo's few-shot
generation. Here each layer allocates ``capacity`` positions once (the prompt, the shared prefix and
every token that may be generated), starts from the shared prefix's states when there is one, and
each step writes only its new token's keys and values. Rows that stop are dropped as before.
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import Cache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in a buffer of ``capacity`` positions, filled from the start."""

    def __init__(self, capacity: int, rows: int, prefix: tuple[Any, Any] | None = None) -> None:
        super().__init__()
        self.capacity = capacity
        self.rows = rows
        self.length = 0
        if prefix is not None:
            keys, values = prefix
            self._allocate(keys)
            self._keys[:, :, : keys.shape[-2]] = keys  # a batch of one, broadcast to every row
            self._values[:, :, : values.shape[-2]] = values
            self.length = keys.shape[-2]
            self._expose()

    def _allocate(self, like: Any) -> None:
        shape = (self.rows, like.shape[1], self.capacity, like.shape[-1])
        self._keys, self._values = like.new_empty(shape), like.new_empty(shape)
        self.device, self.dtype = like.device, like.dtype
        self.is_initialized = True

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
        self._allocate(key_states)

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not self.is_initialized:
            self._allocate(key_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"key/value cache of {self.capacity} positions cannot take {end}")
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: Any) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self.rows = int(self._keys.shape[0])
        self._expose()


def reserved_cache(layers: int, rows: int, capacity: int, prefix: list[tuple[Any, Any]] | None = None) -> Cache:
    """A cache for ``rows`` rows of up to ``capacity`` positions each, starting from ``prefix`` (every
    layer's keys and values for a batch of one) when given."""
    if prefix is not None:
        return Cache(layers=[ReservedLayer(capacity, rows, states) for states in prefix])
    return Cache(layers=[ReservedLayer(capacity, rows) for _ in range(layers)])

"""How a choice's context and continuation are split into tokens, the same in every backend and the trainer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Split like lm-evaluation-harness: trailing spaces of the context move to the continuation,
    and the continuation is what encoding the whole adds after the context's tokens."""
    context_ids, (continuation_ids,) = encode_choices(tokenizer, context, [continuation])
    return context_ids, continuation_ids


def encode_choices(tokenizer: Any, context: str, continuations: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """:func:`encode_pair` for every continuation of one context, in one call to the tokenizer."""
    spaces = len(context) - len(context.rstrip(" "))
    head, moved = (context[:-spaces], context[-spaces:]) if spaces else (context, "")
    context_ids, *wholes = tokenizer([head, *(head + moved + c for c in continuations)]).input_ids
    return context_ids, [whole[len(context_ids) :] for whole in wholes]

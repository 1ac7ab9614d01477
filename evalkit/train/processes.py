"""Which process this is when a launcher (``torchrun``, ``accelerate launch``) runs training on several:
read from the environment those launchers set, so nothing heavy is imported to ask."""

from __future__ import annotations

import os


def rank() -> int:
    """This process's rank (0 when not distributed): rank 0 speaks and writes."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes train together (1 when not distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))

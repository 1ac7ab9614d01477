"""evalkit: evaluate prompt templates and LoRA adapters on golden data, as a pytest plugin.

Importing this package is cheap: torch, transformers and datasets are imported only by the
functions that need them.
"""

from evalkit.errors import EvalkitError
from evalkit.scoring import Score, register_scorer
from evalkit.version import __version__

__all__ = ["EvalkitError", "Score", "__version__", "register_scorer"]

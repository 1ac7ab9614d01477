"""The bundled LoRA trainer: training rows + a suite's `train:` entry -> adapters/<name>/.

Importing this package is cheap; torch, transformers and peft load only when training starts."""

from evalkit.train.adapters import (
    TRAIN_MODES,
    TrainedAdapter,
    TrainMode,
    ensure_adapter,
    read_record,
    read_training_record,
    train_adapter,
)

__all__ = [
    "TRAIN_MODES",
    "TrainMode",
    "TrainedAdapter",
    "ensure_adapter",
    "read_record",
    "read_training_record",
    "train_adapter",
]

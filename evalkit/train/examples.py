"""Training rows as (prompt, completion) pairs, rendered exactly as a candidate renders them.

Also the content hash that decides whether an adapter is stale, and the contamination check that
finds training rows duplicating golden test rows."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.backends.hf import HFBackend
from evalkit.data import Dataset, Row, canonical_json, load_dataset
from evalkit.errors import TrainingError
from evalkit.spec import SuiteSpec, TrainSpec
from evalkit.tasks import PreparedCandidate, prepare, task_kind

FORMAT_VERSION = 1  # bump when a change to training makes earlier adapters stale


@dataclass(frozen=True)
class TrainingSet:
    """Every training row rendered: the prompt the candidate sees and the completion the model learns."""

    spec: SuiteSpec
    train: TrainSpec
    dataset: Dataset
    prepared: PreparedCandidate
    completions: tuple[str, ...]
    stops: bool | None = None  # whether it learns to end the completion (EOS); None: as its task kind does

    def __len__(self) -> int:
        return len(self.completions)

    @property
    def prompts(self) -> list[str]:
        return self.prepared.prompts

    def examples_sha256(self) -> str:
        digest = hashlib.sha256()
        for prompt, completion in zip(self.prompts, self.completions):
            digest.update(canonical_json([prompt, completion]).encode("utf-8"))
        return digest.hexdigest()


def build_training_set(
    spec: SuiteSpec,
    name: str,
    model_path: Path,
    rows: Callable[[Dataset], Dataset] | None = None,
    *,
    stops: bool | None = None,
) -> TrainingSet:
    """Load and render the training rows of adapter ``name``; errors name the file and row. ``rows``
    completes each row before it is rendered (a judge adapter's rows get the rubric's ``target``);
    ``stops``: whether it learns to end its completion (None: as the task kind does)."""
    train = spec.train[name]
    dataset = load_dataset(train.data_path, id_field=spec.id_field)
    if rows is not None:
        dataset = rows(dataset)
    if len(dataset) < 2:
        raise TrainingError(
            f"adapter '{name}' has {len(dataset)} training row(s)",
            path=train.data_path,
            fix="add training rows (a few dozen at least)",
        )
    chat = HFBackend(
        model_path, fingerprint="", lazy=True
    ).apply_chat_template  # loads the tokenizer alone, on first use
    prepared = prepare(spec, train.as_candidate(), dataset, chat)
    kind = task_kind(spec.task.kind)
    completions = tuple(kind.completion(spec, prepared, i) for i in range(len(dataset)))
    return TrainingSet(spec=spec, train=train, dataset=dataset, prepared=prepared, completions=completions, stops=stops)


def content_hash(training: TrainingSet, base_fingerprint: str) -> str:
    """What the adapter depends on: base model, rendered rows and completions, hyperparameters."""
    spec = training.spec
    parts = {
        "format": FORMAT_VERSION,
        "base_model": base_fingerprint,
        "task": spec.task.kind,
        "examples": training.examples_sha256(),
        "hyperparameters": training.train.hyperparameters(),
    }
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


def split_rows(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, validation) index lists; validation holds round(n * fraction) rows, at least one."""
    if fraction <= 0:
        return list(range(n)), []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = min(n - 1, max(1, round(n * fraction)))
    return sorted(order[n_val:]), sorted(order[:n_val])


def kfold_rows(n: int, folds: int, seed: int) -> list[tuple[list[int], list[int]]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [
        (
            sorted(i for k, i in enumerate(order) if k % folds != fold),
            sorted(i for k, i in enumerate(order) if k % folds == fold),
        )
        for fold in range(folds)
    ]


def input_key(fields: dict[str, Any], spec: SuiteSpec) -> str:
    """A row's input: every field but its id and its gold answer."""
    ignored = {spec.id_field, spec.task.target}
    return canonical_json({k: v.strip() if isinstance(v, str) else v for k, v in fields.items() if k not in ignored})


@dataclass(frozen=True)
class Duplicate:
    train_row: str
    test_row: str

    def __str__(self) -> str:
        return f"{self.train_row} = {self.test_row}"


def find_contamination(training: TrainingSet, test_set: Dataset) -> list[Duplicate]:
    """Training rows whose input exactly equals a golden test row's input (ids and answers aside)."""
    test_keys: dict[str, Row] = {}
    for row in test_set.rows:
        test_keys.setdefault(input_key(row.fields, training.spec), row)

    def label(dataset: Dataset, row: Row) -> str:
        return f"{dataset.path.name}:{row.line}" if row.line is not None else f"row {row.number} of {dataset.path.name}"

    duplicates = []
    for row in training.dataset.rows:
        match = test_keys.get(input_key(row.fields, training.spec))
        if match is not None:
            duplicates.append(Duplicate(label(training.dataset, row), label(test_set, match)))
    return duplicates

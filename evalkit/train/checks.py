"""The training data, checked before any compute is spent on it: rows repeated within the training set,
labels too rare for the validation split or missing altogether, and a label distribution far from the
golden set's. Each finding is a line for the terminal and an entry of ``training.json``; a label of the
task with no training row at all stops training (its adapter could never learn it)."""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass

from evalkit.data import Dataset
from evalkit.errors import TrainingError
from evalkit.tasks import row_label, task_kind
from evalkit.train.examples import TrainingSet, input_key

SHOWN = 5  # rows named per finding
FAR = 0.25  # total variation distance between label distributions that is reported


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the training data: ``serious`` ones stop training."""

    check: str
    message: str
    serious: bool = False
    fix: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"check": self.check, "message": self.message, "serious": self.serious}


def _named(labels: list[str]) -> str:
    more = f" and {len(labels) - SHOWN} more" if len(labels) > SHOWN else ""
    return ", ".join(labels[:SHOWN]) + more


def _normalised(key: str) -> str:
    text = key.casefold().translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text).strip()


def _duplicates(training: TrainingSet) -> list[Finding]:
    """Rows whose input repeats another row's exactly, or after case, spacing and punctuation."""
    dataset = training.dataset
    exact: dict[str, list[str]] = defaultdict(list)
    near: dict[str, set[str]] = defaultdict(set)
    rows_near: dict[str, list[str]] = defaultdict(list)
    for row in dataset.rows:
        key, label = input_key(row.fields, training.spec), row_label(dataset, row)
        exact[key].append(label)
        near[_normalised(key)].add(key)
        rows_near[_normalised(key)].append(label)
    repeated = [rows for rows in exact.values() if len(rows) > 1]
    close = [rows_near[k] for k, keys in near.items() if len(keys) > 1]
    found = [
        (
            "duplicates",
            repeated,
            " = ",
            f"{sum(len(r) - 1 for r in repeated)} training row(s) repeat another row's input exactly",
        ),
        (
            "near_duplicates",
            close,
            " ~ ",
            f"{len(close)} group(s) of training rows differ only in case, spacing or punctuation",
        ),
    ]
    return [
        Finding(check, f"{said}: " + _named([joint.join(g) for g in groups]))
        for check, groups, joint, said in found
        if groups
    ]


def _labels(training: TrainingSet, test_set: Dataset) -> list[Finding]:
    """For a task with choices: each label's training rows against the validation split and the golden set."""
    spec = training.spec
    kind = task_kind(spec.task.kind)
    if not kind.offers_choices:
        return []
    trained = Counter(str(kind.gold_text(spec, training.dataset, row)) for row in training.dataset.rows)
    golden = Counter(str(kind.gold_text(spec, test_set, row)) for row in test_set.rows)
    findings = []
    missing = sorted(label for label in golden if label not in trained)
    if missing:
        findings.append(
            Finding(
                "missing_labels",
                f"label(s) {', '.join(missing)} of the golden set have no training row, so the adapter cannot "
                "learn them",
                serious=True,
                fix=f"add rows labelled {', '.join(missing)} to {training.train.data}",
            )
        )
    fraction = training.train.validation.fraction
    if fraction > 0:
        rare = sorted(label for label, n in trained.items() if n * fraction < 1)
        if rare:
            findings.append(
                Finding(
                    "rare_labels",
                    f"label(s) {', '.join(f'{label} ({trained[label]} rows)' for label in rare)} have too few "
                    f"rows for a {fraction:.0%} validation split to hold one of each",
                )
            )
    total_t, total_g = sum(trained.values()), sum(golden.values())
    distance = 0.5 * sum(abs(trained[k] / total_t - golden[k] / total_g) for k in set(trained) | set(golden))
    if distance > FAR:
        shares = ", ".join(
            f"{k} {trained[k] / total_t:.0%} vs {golden[k] / total_g:.0%}" for k in sorted(set(trained) | set(golden))
        )
        findings.append(
            Finding(
                "label_distribution",
                f"the training labels are distributed far from the golden set's (total variation {distance:.2f}; "
                f"training vs golden: {shares})",
            )
        )
    return findings


def check_training_data(training: TrainingSet, test_set: Dataset) -> list[Finding]:
    """Every finding about the training data (contamination is checked on its own, and gates the candidate)."""
    return _duplicates(training) + _labels(training, test_set)


def stop_on_serious(training: TrainingSet, findings: list[Finding]) -> None:
    """A serious finding stops training before any compute is spent, with the fix."""
    serious = [f for f in findings if f.serious]
    if serious:
        raise TrainingError(
            f"adapter '{training.train.name}' cannot be trained on this data: {serious[0].message}",
            path=training.train.data_path,
            fix=serious[0].fix,
        )

"""The training data, checked before training: repeated and near-repeated rows, labels too rare for the
validation split, a label distribution far from the golden set's, and a golden label with no training row
(which stops training before any compute is spent)."""

from __future__ import annotations

import json

import pytest

from evalkit.data import load_dataset
from evalkit.errors import TrainingError
from evalkit.suite import load_suite
from evalkit.train import ensure_adapter
from evalkit.train.checks import check_training_data
from evalkit.train.examples import build_training_set
from tests.conftest import write_jsonl

SUITE = """\
suite: colours
model: {model}
dataset: {{path: data/test.jsonl}}
task: {{kind: classify, choices: [red, green, blue], target: label}}
train:
  colours-lora:
    output: adapters/colours-lora
    data: data/train.jsonl
    template: "Item: {{{{ text }}}}\\nColour:"
    epochs: 1
    validation: {{fraction: 0.25}}
candidates:
  lora: {{template: "Item: {{{{ text }}}}\\nColour:", adapter: colours-lora}}
"""
TEST = [
    {"id": f"t{i}", "text": word, "label": colour}
    for i, (word, colour) in enumerate(
        [("apple", "red"), ("grass", "green"), ("sky", "blue"), ("cherry", "red"), ("lime", "green"), ("ocean", "blue")]
    )
]


def _project(tmp_path, tiny_model, train):
    write_jsonl(tmp_path / "data" / "test.jsonl", TEST)
    write_jsonl(tmp_path / "data" / "train.jsonl", train)
    path = tmp_path / "colours.eval.yaml"
    path.write_text(SUITE.format(model=tiny_model))
    return load_suite(path)


def _findings(spec, tiny_model):
    training = build_training_set(spec, "colours-lora", tiny_model)
    return {f.check: f for f in check_training_data(training, load_dataset(spec.dataset_path))}


def test_repeated_rows_rare_labels_and_a_skewed_distribution_are_reported(tmp_path, tiny_model):
    train = [
        {"id": "a", "text": "apple", "label": "red"},
        {"id": "b", "text": "apple", "label": "red"},  # the same input as row 1
        {"id": "c", "text": "Apple!", "label": "red"},  # the same but for case and punctuation
        {"id": "d", "text": "cherry", "label": "red"},
        {"id": "e", "text": "rose", "label": "red"},
        {"id": "f", "text": "grass", "label": "green"},
        {"id": "g", "text": "sky", "label": "blue"},
    ]
    findings = _findings(_project(tmp_path, tiny_model, train), tiny_model)
    assert findings["duplicates"].message == (
        "1 training row(s) repeat another row's input exactly: train.jsonl:1 = train.jsonl:2"
    )
    assert findings["near_duplicates"].message == (
        "1 group(s) of training rows differ only in case, spacing or punctuation: "
        "train.jsonl:1 ~ train.jsonl:2 ~ train.jsonl:3"
    )
    assert findings["rare_labels"].message == (
        "label(s) blue (1 rows), green (1 rows) have too few rows for a 25% validation split to hold one of each"
    )
    assert findings["label_distribution"].message == (
        "the training labels are distributed far from the golden set's (total variation 0.38; training vs "
        "golden: blue 14% vs 33%, green 14% vs 33%, red 71% vs 33%)"
    )
    assert not any(f.serious for f in findings.values())


def test_a_golden_label_without_training_rows_stops_training_before_it_starts(tmp_path, tiny_model):
    train = [{"id": f"r{i}", "text": f"apple {i}", "label": "red"} for i in range(4)] + [
        {"id": f"g{i}", "text": f"grass {i}", "label": "green"} for i in range(4)
    ]
    spec = _project(tmp_path, tiny_model, train)
    with pytest.raises(TrainingError) as info:
        ensure_adapter(spec, "colours-lora")
    assert str(info.value).endswith(
        "data/train.jsonl: adapter 'colours-lora' cannot be trained on this data: label(s) blue of the golden set "
        "have no training row, so the adapter cannot learn them\n  fix: add rows labelled blue to data/train.jsonl"
    )
    assert not (tmp_path / "adapters" / "colours-lora").exists()


def test_training_json_keeps_the_findings(tmp_path, tiny_model):
    train = [
        {"id": f"{c}{i}", "text": f"{w} {i}", "label": c}
        for c, w in (("red", "apple"), ("green", "grass"), ("blue", "sky"))
        for i in range(4)
    ]
    train.append(dict(train[0], id="dup"))
    spec = _project(tmp_path, tiny_model, train)
    said: list[str] = []
    ensure_adapter(spec, "colours-lora", notify=said.append)
    record = json.loads((tmp_path / "adapters" / "colours-lora" / "training.json").read_text())
    assert record["data_checks"] == [
        {
            "check": "duplicates",
            "message": "1 training row(s) repeat another row's input exactly: train.jsonl:1 = train.jsonl:13",
            "serious": False,
        }
    ]
    assert "adapter 'colours-lora': training data: 1 training row(s) repeat another row's input exactly: " in "\n".join(
        said
    )

"""``evalkit init``: a starter suite, its prompt and a threshold, written from a data file's fields.

The data file's rows (any format :func:`evalkit.data.load_dataset` reads) decide the task. A field with a
few distinct values (a label) makes a classify task with those values as its choices; otherwise the suite
generates text and scores it by exact match against a target field. The other fields are the prompt's
inputs. Without a data file, a tiny example dataset is written as well. Nothing is overwritten unless
asked (``--force``), and the written suite is read back through the same validation ``pytest`` applies.
"""

from __future__ import annotations

import json
import keyword
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.data import Dataset, load_dataset
from evalkit.errors import DatasetError, EvalkitError, shown_path

DEFAULT_MODEL = "smollm2-135m-instruct"
MAX_LABELS = 20  # at most this many distinct values make a field a label
LABEL_NAMES = ("label", "labels", "category", "class", "sentiment", "intent", "topic")
TARGET_NAMES = ("target", "answer", "expected", "output", "completion", "response", "reference")
INPUT_NAMES = ("text", "input", "question", "prompt", "message", "sentence", "review", "query")

EXAMPLE_ROWS = [
    {"id": "r1", "text": "The battery lasts all day and the screen is sharp.", "label": "positive"},
    {"id": "r2", "text": "It stopped working after two days.", "label": "negative"},
    {"id": "r3", "text": "Great value, I would buy it again.", "label": "positive"},
    {"id": "r4", "text": "The parcel arrived broken and support never replied.", "label": "negative"},
    {"id": "r5", "text": "Setup took a minute and everything just works.", "label": "positive"},
    {"id": "r6", "text": "Too loud, too slow, and the manual is useless.", "label": "negative"},
    {"id": "r7", "text": "My whole family loves it.", "label": "positive"},
    {"id": "r8", "text": "I returned it the same week.", "label": "negative"},
]


@dataclass(frozen=True)
class DataShape:
    """What a starter suite needs to know about a dataset: its usable fields, and the task they allow."""

    fields: tuple[str, ...]  # every field present with a plain value (text, number, true/false) in each row
    inputs: tuple[str, ...]  # the fields the prompt shows
    kind: str  # classify or generate
    target: str  # the label field (classify) or the expected-answer field (generate)
    labels: tuple[str, ...] = ()  # classify: the label set, in the order the choices are written


@dataclass(frozen=True)
class Written:
    """One file ``evalkit init`` wrote, and what it holds."""

    path: Path
    what: str


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and value is not None


def _label_values(values: list[Any]) -> tuple[str, ...] | None:
    """The label set of a field's values, or None when the field is not a label: it takes 2 to
    MAX_LABELS distinct values, repeats at least one, and is text or the indexes 0..k-1."""
    distinct = set(values)
    if not 2 <= len(distinct) <= MAX_LABELS or len(distinct) == len(values):
        return None
    if all(isinstance(v, str) for v in distinct):
        if any(not v.strip() for v in distinct):
            return None
        return tuple(sorted(distinct))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in distinct) and distinct == set(range(len(distinct))):
        return tuple(str(i) for i in range(len(distinct)))  # 0-based indexes into the choices
    return None


def _usable_in_template(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and name not in ("true", "false", "none")


def _preferred(names: list[str], preferred: tuple[str, ...]) -> str | None:
    by_lower = {n.lower(): n for n in names}
    return next((by_lower[p] for p in preferred if p in by_lower), None)


def read_shape(dataset: Dataset, id_field: str = "id") -> DataShape:
    """The fields of ``dataset``, its label field and label set if it has one, and the task they make."""
    rows = [row.fields for row in dataset.rows]
    names = [n for n in rows[0] if all(n in r and _plain(r[n]) for r in rows)]
    usable = [n for n in names if n != id_field and _usable_in_template(n)]
    texts = [n for n in usable if all(isinstance(r[n], str) for r in rows)]
    labels = {n: found for n in usable if (found := _label_values([r[n] for r in rows])) is not None}
    label = _preferred(list(labels), LABEL_NAMES)
    if label is None and labels:  # the label-like field with the fewest values that leaves an input to show
        candidates = sorted(labels, key=lambda n: (len(labels[n]), usable.index(n)))
        label = next((n for n in candidates if any(t != n for t in texts)), None)
    if label is not None and any(t != label for t in texts):
        inputs = [n for n in usable if n != label and n not in labels]
        inputs = inputs or [t for t in texts if t != label]
        return DataShape(tuple(names), tuple(inputs), "classify", label, labels[label])
    target = _preferred(texts, TARGET_NAMES) or (texts[-1] if len(texts) > 1 else None)
    inputs = [n for n in usable if n != target]
    if target is None or not inputs:
        present = ", ".join(rows[0]) or "none"
        raise DatasetError(
            f"no usable fields for a starter suite (fields: {present}): it needs an input field and a label or "
            "expected-answer field, each a plain value in every row, named like a Python variable",
            path=dataset.path,
            fix='give every row a text field and a label field, e.g. {"text": "...", "label": "positive"}; or '
            'an input and an expected answer, e.g. {"question": "...", "answer": "..."}',
        )
    return DataShape(tuple(names), tuple(inputs), "generate", target)


def _suite_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._") or "starter"
    return name if name[0].isalnum() else f"s{name}"


def _prompt_text(shape: DataShape) -> str:
    ordered = sorted(shape.inputs, key=lambda n: (n.lower() not in INPUT_NAMES, shape.inputs.index(n)))
    lines = [f"{n.replace('_', ' ').capitalize()}: {{{{ {n} }}}}" for n in ordered]
    if shape.kind == "classify":
        shown = ", ".join(shape.labels)
        return "\n".join([f"Answer with one of: {shown}.", "", *lines, f"{shape.target.capitalize()}:"]) + "\n"
    return "\n".join([*lines, f"{shape.target.replace('_', ' ').capitalize()}:"]) + "\n"


def _suite_text(name: str, shape: DataShape, data: str, prompt: str, model: str) -> str:
    if shape.kind == "classify":
        choices = ", ".join(json.dumps(label) for label in shape.labels)
        task = f"task:\n  kind: classify\n  choices: [{choices}]\n  target: {shape.target}\n"
        what = f"pick the `{shape.target}` of each row, scored by the likelihood of each choice"
    else:
        task = (
            f'task:\n  kind: generate\n  target: {shape.target}\n  max_new_tokens: 32\n  stop: ["\\n"]\n'
            "  scorer: exact_match               # case, spacing and surrounding punctuation ignored\n"
        )
        what = f"write the `{shape.target}` of each row, scored by exact match"
    return (
        f"# Written by `evalkit init`: {what}.\n"
        f"suite: {name}\n"
        f"model: {_yaml_scalar(model)}\n"
        f"dataset:\n  path: {_yaml_scalar(data)}\n"
        f"{task}"
        f"candidates:\n  zero_shot:\n    prompt: {_yaml_scalar(prompt)}\n"
        "thresholds:\n"
        '  accuracy: ">= 0.0"                # raise it to just below the accuracy of your first run\n'
    )


def _yaml_scalar(text: str) -> str:
    """``text`` as a YAML value: plain when that reads back the same, else double-quoted."""
    return (
        text
        if re.fullmatch(r"[A-Za-z0-9_./~-][A-Za-z0-9_./~ -]*", text) and not text.endswith(" ")
        else json.dumps(text)
    )


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def write_starter(
    data_file: str | Path | None,
    *,
    root: str | Path = ".",
    name: str | None = None,
    model: str = DEFAULT_MODEL,
    force: bool = False,
) -> tuple[list[Written], DataShape]:
    """Write ``suites/<name>.eval.yaml`` and ``prompts/<name>.j2`` under ``root`` (and, without a data file,
    ``suites/data/<name>.jsonl``); returns what was written and the shape read from the data."""
    from evalkit.atomic import write_text_atomically

    root = Path(root)
    suites, prompts = root / "suites", root / "prompts"
    example = None
    if data_file is None:
        name = _suite_name(name or "example")
        data_path = suites / "data" / f"{name}.jsonl"
        example = "".join(json.dumps(r) + "\n" for r in EXAMPLE_ROWS)
    else:
        data_path = Path(data_file)
        name = _suite_name(name or data_path.name.split(".")[0])
    suite_path, prompt_path = suites / f"{name}.eval.yaml", prompts / f"{name}.j2"
    planned = [p for p in (data_path if example is not None else None, prompt_path, suite_path) if p is not None]
    existing = [p for p in planned if p.exists()]
    if existing and not force:
        raise EvalkitError(
            "this file already exists, and evalkit init never overwrites a file",
            path=existing[0],
            fix=f"pass --force to overwrite it, choose another name with --name, or remove {shown_path(existing[0])}",
        )
    if example is not None:
        dataset = _example_dataset(data_path, example)
    else:
        dataset = load_dataset(data_path)
    shape = read_shape(dataset)
    prompt_ref = _relative(prompt_path.parent, suites) + f"/{prompt_path.name}"
    suite_text = _suite_text(name, shape, _relative(data_path, suites), prompt_ref, model)
    written: list[Written] = []
    if example is not None:
        write_text_atomically(data_path, example)
        written.append(Written(data_path, f"{len(EXAMPLE_ROWS)} example rows (text, label)"))
    write_text_atomically(prompt_path, _prompt_text(shape))
    written.append(Written(prompt_path, f"the prompt: shows {', '.join(shape.inputs)}"))
    write_text_atomically(suite_path, suite_text)
    written.append(Written(suite_path, _suite_summary(shape)))
    _check_written(suite_path)
    return written, shape


def _example_dataset(path: Path, text: str) -> Dataset:
    """The example rows as a Dataset (read from a temporary copy: nothing is written before every check passed)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="evalkit-init-") as folder:
        copy = Path(folder) / path.name
        copy.write_text(text, encoding="utf-8")
        loaded = load_dataset(copy)
    return Dataset(path=path, rows=loaded.rows, content_hash=loaded.content_hash)


def _suite_summary(shape: DataShape) -> str:
    if shape.kind == "classify":
        task = f"classify `{shape.target}` into {', '.join(shape.labels)}"
    else:
        task = f"generate `{shape.target}`, scored by exact match"
    return f"the suite: {task}; threshold accuracy >= 0.0"


def _check_written(suite_path: Path) -> None:
    """The written suite passes evalkit's own validation (the same that pytest's collection applies)."""
    from evalkit.suite import load_suite

    load_suite(suite_path)


def next_command(written: list[Written]) -> str:
    suite = next(w.path for w in written if w.path.name.endswith(".eval.yaml"))
    return f"pytest {shown_path(suite)}"

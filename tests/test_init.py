"""`evalkit init`: a starter suite, prompt and threshold written from a data file's fields."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.data import load_dataset
from evalkit.errors import DatasetError
from evalkit.starter import EXAMPLE_ROWS, read_shape, write_starter
from evalkit.suite import load_suite
from tests.conftest import TICKET_ROWS, write_jsonl

QA_ROWS = [
    {"id": "q1", "question": "What is 2 + 3?", "answer": "5"},
    {"id": "q2", "question": "What is the capital of France?", "answer": "Paris"},
    {"id": "q3", "question": "How many legs has a spider?", "answer": "8"},
]

TICKETS_SUITE = """\
# Written by `evalkit init`: pick the `label` of each row, scored by the likelihood of each choice.
suite: tickets
model: smollm2-135m-instruct
dataset:
  path: ../tickets.jsonl
task:
  kind: classify
  choices: ["account", "billing", "other", "shipping", "technical"]
  target: label
candidates:
  zero_shot:
    prompt: ../prompts/tickets.j2
thresholds:
  accuracy: ">= 0.0"                # raise it to just below the accuracy of your first run
"""

TICKETS_PROMPT = """\
Answer with one of: account, billing, other, shipping, technical.

Text: {{ text }}
Label:
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_fields_and_the_label_set_are_read_from_each_format(tmp_path: Path):
    jsonl = write_jsonl(tmp_path / "t.jsonl", TICKET_ROWS)
    (tmp_path / "t.json").write_text(json.dumps(TICKET_ROWS))
    with (tmp_path / "t.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows(TICKET_ROWS)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(TICKET_ROWS), tmp_path / "t.parquet")
    for path in (jsonl, tmp_path / "t.json", tmp_path / "t.csv", tmp_path / "t.parquet"):
        shape = read_shape(load_dataset(path))
        assert shape.fields == ("id", "text", "label"), path
        assert (shape.kind, shape.target, shape.inputs) == ("classify", "label", ("text",)), path
        assert shape.labels == ("account", "billing", "other", "shipping", "technical"), path


def test_a_field_of_many_values_makes_a_generate_task_and_indexes_are_labels_too(tmp_path: Path):
    shape = read_shape(load_dataset(write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)))
    assert (shape.kind, shape.target, shape.inputs, shape.labels) == ("generate", "answer", ("question",), ())
    rows = [{"sentence": f"review {i}", "label": i % 2} for i in range(6)]  # SST-2's 0/1 labels
    shape = read_shape(load_dataset(write_jsonl(tmp_path / "sst2.jsonl", rows)))
    assert (shape.kind, shape.target, shape.inputs, shape.labels) == ("classify", "label", ("sentence",), ("0", "1"))
    rows = [{"body": f"message {i}", "team": ["sales", "support", "sales"][i % 3]} for i in range(6)]
    shape = read_shape(load_dataset(write_jsonl(tmp_path / "teams.jsonl", rows)))
    assert (shape.kind, shape.target, shape.inputs, shape.labels) == (
        "classify",
        "team",
        ("body",),
        ("sales", "support"),
    )


def test_init_writes_the_suite_and_the_prompt_and_says_what_next(project: Path, capsys):
    write_jsonl(project / "tickets.jsonl", TICKET_ROWS)
    assert main(["init", "tickets.jsonl"]) == 0
    assert (project / "suites" / "tickets.eval.yaml").read_text() == TICKETS_SUITE
    assert (project / "prompts" / "tickets.j2").read_text() == TICKETS_PROMPT
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == [
        "prompts/tickets.j2",
        "suites/tickets.eval.yaml",
        "tickets.jsonl",
    ]
    assert capsys.readouterr().out == (
        "read tickets.jsonl: fields id, text, label; label set of `label`: account, billing, other, shipping, "
        "technical\n"
        "wrote:\n"
        "  prompts/tickets.j2        the prompt: shows text\n"
        "  suites/tickets.eval.yaml  the suite: classify `label` into account, billing, other, shipping, technical; "
        "threshold accuracy >= 0.0\n"
        "next: pytest suites/tickets.eval.yaml\n"
    )
    spec = load_suite(project / "suites" / "tickets.eval.yaml")
    assert spec.task.choices == ["account", "billing", "other", "shipping", "technical"]
    assert spec.dataset_path == (project / "tickets.jsonl").resolve()


def test_a_generate_suite_is_written_for_question_and_answer_rows(project: Path):
    write_jsonl(project / "data" / "qa.jsonl", QA_ROWS)
    written, shape = write_starter("data/qa.jsonl")
    assert [str(w.path) for w in written] == ["prompts/qa.j2", "suites/qa.eval.yaml"]
    assert (project / "prompts" / "qa.j2").read_text() == "Question: {{ question }}\nAnswer:\n"
    suite = (project / "suites" / "qa.eval.yaml").read_text()
    assert "  path: ../data/qa.jsonl\n" in suite
    assert '  kind: generate\n  target: answer\n  max_new_tokens: 32\n  stop: ["\\n"]\n  scorer: exact_match' in suite
    spec = load_suite(project / "suites" / "qa.eval.yaml")
    assert (spec.task.kind, spec.task.target, spec.task.scorer_name) == ("generate", "answer", "exact_match")


def test_without_a_data_file_an_example_dataset_is_written_too(project: Path, capsys):
    assert main(["init"]) == 0
    rows = [json.loads(line) for line in (project / "suites" / "data" / "example.jsonl").read_text().splitlines()]
    assert rows == EXAMPLE_ROWS
    spec = load_suite(project / "suites" / "example.eval.yaml")
    assert (spec.task.kind, spec.task.choices) == ("classify", ["negative", "positive"])
    out = capsys.readouterr().out
    assert "  suites/data/example.jsonl  8 example rows (text, label)\n" in out
    assert out.endswith("next: pytest suites/example.eval.yaml\n")


def test_the_written_suite_is_collected_and_run_by_pytest(pytester: pytest.Pytester):
    assert main(["init"]) == 0  # pytester runs in its own temporary folder
    suite = pytester.path / "suites" / "example.eval.yaml"
    positive = {r["text"].split()[1]: "positive" for r in EXAMPLE_ROWS if r["label"] == "positive"}
    scripted = json.dumps({"backend": "scripted", "answers": positive, "default": "negative"})
    suite.write_text(suite.read_text().replace("model: smollm2-135m-instruct", f"model: {scripted}"))
    result = pytester.runpytest("suites/", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*suites/example.eval.yaml::zero_shot PASSED*"])
    record = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())
    assert record["suites"]["example"]["zero_shot"]["metrics"]["accuracy"] == 1.0


def test_the_written_suite_runs_on_a_real_model(project: Path, tiny_model: Path):
    from evalkit.session import EvalSession

    write_jsonl(project / "qa.jsonl", QA_ROWS)
    assert main(["init", "qa.jsonl", "--model", str(tiny_model), "--name", "tiny-qa"]) == 0
    session = EvalSession(root=project, reports_dir=project / "reports", cache_dir=None)
    try:
        result = session.run(session.spec(project / "suites" / "tiny-qa.eval.yaml"), "zero_shot")
    finally:
        session.close()
    assert (result.n, result.failures) == (3, [])
    assert [e.target for e in result.examples] == ["5", "Paris", "8"]


def test_init_never_overwrites_a_file(project: Path, capsys):
    write_jsonl(project / "tickets.jsonl", TICKET_ROWS)
    (project / "prompts").mkdir()
    (project / "prompts" / "tickets.j2").write_text("my own prompt\n")
    assert main(["init", "tickets.jsonl"]) == 2
    assert capsys.readouterr().err == (
        "evalkit: prompts/tickets.j2: this file already exists, and evalkit init never overwrites a file\n"
        "  fix: pass --force to overwrite it, choose another name with --name, or remove prompts/tickets.j2\n"
    )
    assert (project / "prompts" / "tickets.j2").read_text() == "my own prompt\n"
    assert not (project / "suites").exists()  # nothing at all is written
    assert main(["init", "tickets.jsonl", "--name", "tickets2"]) == 0
    assert main(["init", "tickets.jsonl", "--force"]) == 0
    assert (project / "prompts" / "tickets.j2").read_text() == TICKETS_PROMPT


def test_a_data_file_without_usable_fields_is_a_clear_error(project: Path, capsys):
    write_jsonl(project / "nested.jsonl", [{"id": str(i), "meta": {"a": i}} for i in range(3)])
    assert main(["init", "nested.jsonl"]) == 2
    assert capsys.readouterr().err == (
        "evalkit: nested.jsonl: no usable fields for a starter suite (fields: id, meta): it needs an input field and "
        "a label or expected-answer field, each a plain value in every row, named like a Python variable\n"
        '  fix: give every row a text field and a label field, e.g. {"text": "...", "label": "positive"}; or an '
        'input and an expected answer, e.g. {"question": "...", "answer": "..."}\n'
    )
    assert not (project / "suites").exists()
    with pytest.raises(DatasetError, match="dataset does not exist"):
        write_starter("missing.jsonl")

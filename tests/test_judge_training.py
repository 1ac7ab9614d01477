"""A judge trained like any adapter (`train: {<name>: {judge: true}}`): its rows are labelled verdicts
rendered with the judge's own rubric, the judge scorer runs through it, it is never calibrated on rows it
learnt, and it goes stale when its verdicts or its rubric change."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from evalkit.errors import SuiteError, TrainingError
from evalkit.suite import load_suite
from tests.conftest import write_jsonl

RUBRIC = "Question: {{ question }}\nReference: {{ target }}\nAnswer: {{ output }}\nCorrect? Grade:"
ROWS = [
    {"id": "r1", "question": "Capital of France?", "reference": "Paris"},
    {"id": "r2", "question": "Legs on a spider?", "reference": "eight"},
]
WORDS = [("sky", "blue"), ("grass", "green"), ("sun", "yellow"), ("apple", "red"), ("ocean", "blue"), ("lime", "green")]
VERDICTS = [
    {"id": f"v{i}{k}", "question": f"Colour of the {thing}?", "reference": colour, "output": output, "verdict": verdict}
    for i, (thing, colour) in enumerate(WORDS)
    for k, (output, verdict) in enumerate([(colour, "C"), ("purple", "I"), (f"It is {colour}.", "C"), ("grey", "I")])
]
CALIBRATION = [
    {"id": "c1", "question": "Colour of a lemon?", "reference": "yellow", "output": "yellow", "verdict": "C"},
    {"id": "c2", "question": "Colour of a lemon?", "reference": "yellow", "output": "black", "verdict": "I"},
]


def _project(
    root: Path, tiny_model: Path, *, calibration: list[dict] = CALIBRATION, adapter: str = "judge-lora"
) -> Path:
    write_jsonl(root / "data" / "rows.jsonl", ROWS)
    write_jsonl(root / "data" / "verdicts.jsonl", VERDICTS)
    write_jsonl(root / "data" / "judged.jsonl", calibration)
    (root / "rubric.j2").write_text(RUBRIC, encoding="utf-8")
    path = root / "judged.eval.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            suite: judged
            model: {tiny_model}
            dataset: {{path: data/rows.jsonl}}
            task:
              kind: generate
              target: reference
              max_new_tokens: 3
              scorer:
                name: judge
                model: {tiny_model}
                rubric: rubric.j2
                calibration: data/judged.jsonl
                adapter: {adapter}
            train:
              judge-lora:
                judge: true
                output: adapters/judge-lora
                data: data/verdicts.jsonl
                epochs: 1
                learning_rate: 1.0e-3
                batch_size: 8
                validation: {{fraction: 0.25}}
                lora: {{r: 4, alpha: 8, target_modules: [q_proj, v_proj]}}
            candidates:
              plain: {{template: "Q: {{{{ question }}}}\\nA:"}}
            """
        ),
        encoding="utf-8",
    )
    return path


def test_a_judge_adapter_learns_the_verdicts_as_the_judge_is_prompted_and_grades_through_it(tmp_path, tiny_model):
    from evalkit.judge.panel import Prompting
    from evalkit.judge.training import judge_training
    from evalkit.prompts import PromptTemplate
    from evalkit.testing import evaluate
    from evalkit.train import ensure_adapter
    from evalkit.train.examples import build_training_set

    path = _project(tmp_path, tiny_model)
    spec = load_suite(path)
    adapter = ensure_adapter(spec, "judge-lora")
    record = json.loads((tmp_path / "adapters/judge-lora/training.json").read_text())
    assert record["task"] == "classify" and adapter.trained_now

    # the rows it learnt are the judge's own prompts, and the verdict's grade after the judge's prefix
    judged, rows = judge_training(spec, "judge-lora")
    training = build_training_set(judged, "judge-lora", tiny_model, rows)
    first = VERDICTS[0]
    context = {**first, "target": first["reference"]}
    judge_prompt = Prompting(PromptTemplate.from_file(tmp_path / "rubric.j2")).prompt(None, context, "row 1")  # type: ignore[arg-type]
    assert (
        training.prompts[0]
        == judge_prompt
        == ("Question: Colour of the sky?\nReference: blue\nAnswer: blue\nCorrect? Grade:")
    )
    assert training.completions[:2] == (" C", " I")

    result = evaluate(path, "plain")
    assert result.judge is not None and result.judge.calibration is not None and result.judge.calibration.n == 2

    # the judge's identity follows its adapter: a retrained judge is a changed judge
    path.write_text(path.read_text().replace("    epochs: 1\n", "    epochs: 1\n    seed: 7\n"))
    assert ensure_adapter(load_suite(path), "judge-lora").trained_now
    again = evaluate(path, "plain")
    assert again.judge is not None and again.judge.sha256 != result.judge.sha256


def test_a_calibration_file_that_shares_rows_with_the_judges_training_data_is_refused(tmp_path, tiny_model):
    from evalkit.train import ensure_adapter

    shared = {**VERDICTS[5], "id": "c9"}
    path = _project(tmp_path, tiny_model, calibration=[*CALIBRATION, shared])
    with pytest.raises(TrainingError) as refused:
        ensure_adapter(load_suite(path), "judge-lora")
    message = str(refused.value)
    assert "judge adapter 'judge-lora' would be calibrated on 1 row(s) it is trained on" in message
    assert "(verdicts.jsonl:6 = judged.jsonl:3)" in message  # the training row and the calibration row
    assert not (tmp_path / "adapters/judge-lora").exists()


def test_the_judge_adapter_goes_stale_when_its_verdicts_or_its_rubric_change(tmp_path, tiny_model):
    from evalkit.train import ensure_adapter

    path = _project(tmp_path, tiny_model)
    ensure_adapter(load_suite(path), "judge-lora")
    ensure_adapter(load_suite(path), "judge-lora", mode="never")  # current: no error

    (tmp_path / "rubric.j2").write_text(RUBRIC.replace("Correct?", "Right?"), encoding="utf-8")
    with pytest.raises(TrainingError) as stale:
        ensure_adapter(load_suite(path), "judge-lora", mode="never")
    assert "its training rows, prompt template or completions changed" in str(stale.value)

    (tmp_path / "rubric.j2").write_text(RUBRIC, encoding="utf-8")
    write_jsonl(tmp_path / "data" / "verdicts.jsonl", [*VERDICTS[:-1], {**VERDICTS[-1], "verdict": "C"}])
    with pytest.raises(TrainingError) as stale:
        ensure_adapter(load_suite(path), "judge-lora", mode="never")
    assert "its training rows, prompt template or completions changed" in str(stale.value)


def test_a_judge_adapter_that_the_suite_does_not_define_is_named_at_its_line(tmp_path, tiny_model):
    path = _project(tmp_path, tiny_model, adapter="judge-lroa")
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert (
        str(error.value)
        .splitlines()[0]
        .endswith(
            "judged.eval.yaml:13: the judge's adapter 'judge-lroa' is not an adapter of `train:` (did you mean 'judge-lora'?)"
        )
    )


def test_a_judge_adapter_entry_with_its_own_prompt_is_refused(tmp_path, tiny_model):
    path = _project(tmp_path, tiny_model)
    path.write_text(path.read_text().replace("    judge: true\n", "    judge: true\n    template: 'x'\n"))
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert "a judge adapter is prompted as the judge is" in str(error.value)

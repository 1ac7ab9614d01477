"""lm-evaluation-harness tasks as suites (evalkit.harness): lm-eval's requests byte for byte, the LM interface
against direct computation on the tiny model, groups, `!function`, data sources and their errors, lm-eval's
own command with `--model evalkit`, and the retention check of an adapter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from evalkit.errors import SuiteError  # noqa: E402
from evalkit.harness.loading import MIRROR_VARIABLE  # noqa: E402
from evalkit.session import EvalSession  # noqa: E402
from evalkit.suite import load_suite  # noqa: E402
from evalkit.testing import ScriptedBackend, evaluate  # noqa: E402
from tests.conftest import COLOURS, write_jsonl  # noqa: E402
from tests.lm_eval_prompts import CASES, FIXTURES, MIRROR, ROWS, request_key  # noqa: E402

COLOUR_WORDS = list(COLOURS)
COLOUR_TASK = """\
task: {name}
dataset_path: json
output_type: multiple_choice
test_split: test
doc_to_text: "Item: {{{{text}}}}\\nColour:"
doc_to_choice: ["red", "green", "blue", "yellow"]
doc_to_target: "{{{{['red', 'green', 'blue', 'yellow'].index(label)}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def _suite(folder: Path, body: str, name: str = "task.eval.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def _colour_rows(words: list[str], start: int = 0) -> list[dict]:
    return [{"id": f"r{start + i}", "text": f"{w} {100 + i}", "label": COLOURS[w]} for i, w in enumerate(words)]


@pytest.fixture
def colour_task(tmp_path: Path, tiny_model: Path):
    """A project-written multiple-choice task (the tiny model's colours) and a suite running it."""
    (tmp_path / "colours.yaml").write_text(COLOUR_TASK.format(name="colours_mc"), encoding="utf-8")
    write_jsonl(tmp_path / "data" / "colours.jsonl", _colour_rows(COLOUR_WORDS * 2))

    def write(extra: str = "", task: str = "colours.yaml", top: str = "") -> Path:
        """The suite; ``extra``: more keys of its `lm_eval:` section; ``top``: more top-level keys."""
        text = f"suite: colours-lm-eval\nmodel: {tiny_model}\nlm_eval:\n  task: {task}\n"
        text += "  data_files: {test: data/colours.jsonl}\n" + textwrap.indent(extra, "  ") + top
        return _suite(tmp_path, text)

    return write


# --------------------------------------------------------------------------- lm-eval's requests, byte for byte


def _first_choice(received) -> str:
    return received.choices[0] if received.kind == "classify" else "The answer is 4."


@pytest.mark.skipif(not MIRROR.is_dir(), reason="the hub-schema data sets are not beside the repository")
@pytest.mark.parametrize("case", CASES, ids=[c.task for c in CASES])
def test_requests_equal_lm_evals_own_byte_for_byte(case, tmp_path: Path):
    from evalkit.harness.run import run_task

    fixture = json.loads(FIXTURES.read_text(encoding="utf-8"))["tasks"][case.task]
    suite = _suite(
        tmp_path,
        f"""\
        suite: equivalence
        lm_eval:
          task: {case.task}
          num_fewshot: {case.num_fewshot}
          limit: {ROWS}
          data_files: {json.dumps(case.paths())}
        """,
    )
    spec = load_suite(suite)
    outcome = run_task(spec, ScriptedBackend(_first_choice), ROWS)
    sent = [request_key(kind, args) for kind, args in outcome.requests]
    assert len(sent) == len(fixture["requests"]) >= ROWS
    assert sent == fixture["requests"]


# --------------------------------------------------------------------------- the LM interface on the tiny model


def _instance(kind: str, args: tuple, index: int = 0):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=index, metadata=("t", index, 1))


def _direct_loglikelihood(model_dir: Path, context: str, continuation: str) -> tuple[float, bool]:
    """lm-eval's HF computation: trailing spaces of the context move to the continuation; the
    continuation's tokens are the whole's beyond the context's; their log-probabilities summed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    head = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
    targets = whole[head:]
    picked = [logits[head - 1 + i, t].item() for i, t in enumerate(targets)]
    greedy = all(int(logits[head - 1 + i].argmax()) == t for i, t in enumerate(targets))
    return sum(picked), greedy


def test_loglikelihood_equals_a_direct_computation(tiny_backend, tiny_model: Path):
    from evalkit.harness.lm import EvalkitLM

    lm = EvalkitLM(tiny_backend)
    pairs = [
        ("Ticket: my invoice is wrong\nCategory:", " billing"),
        ("Ticket: my invoice is wrong\nCategory:", " technical"),
        ("Question: what is 2 + 3?\nAnswer: ", "5"),  # a trailing space moves to the continuation
        ("Item: apple\nColour:", " red"),
    ]
    answers = lm.loglikelihood([_instance("loglikelihood", pair, i) for i, pair in enumerate(pairs)])
    for (context, continuation), (logprob, greedy) in zip(pairs, answers):
        expected, expected_greedy = _direct_loglikelihood(tiny_model, context, continuation)
        assert logprob == pytest.approx(expected, abs=1e-4)
        assert greedy == expected_greedy
    # requests that share a context went to the backend as one choice request
    assert [kind for kind, _ in lm.requests_seen] == ["loglikelihood"] * 4


def test_generate_until_stops_at_the_first_stop_sequence(tiny_backend):
    from evalkit.backends.base import GenerateRequest
    from evalkit.harness.lm import EvalkitLM

    prompt = "Ticket: my invoice is wrong\nCategory:"
    (free,) = tiny_backend.generate([GenerateRequest(prompt=prompt, max_new_tokens=12, stop=())])
    assert len(free.text) > 4
    stop = free.text[2:4]  # a stop string that occurs in the free output
    lm = EvalkitLM(tiny_backend)
    cut, capped = lm.generate_until(
        [
            _instance("generate_until", (prompt, {"until": [stop], "max_gen_toks": 12}), 0),
            _instance("generate_until", (prompt, {"until": ["never written"], "max_gen_toks": 3}), 1),
        ]
    )
    assert cut == free.text[: free.text.index(stop)]
    assert stop not in cut
    assert lm.tokens["output"] >= 3
    assert len(tiny_backend.tokenizer(capped, add_special_tokens=False)["input_ids"]) <= 3


# --------------------------------------------------------------------------- a suite of a task of one's own


def test_a_suite_reports_lm_evals_metrics_per_document(colour_task):
    result = evaluate(colour_task(top='thresholds: {acc: ">= 0.0"}\n'), "base")
    assert result.task == "lm_eval"
    assert result.n == 16
    acc = [e.details["metrics"]["acc"] for e in result.examples]
    assert result.metrics["acc"] == pytest.approx(sum(acc) / 16)
    assert result.metrics["accuracy"] == result.metrics["acc"]  # the gated metric: acc by default
    assert [e.correct for e in result.examples] == [a == 1.0 for a in acc]
    assert [e.id for e in result.examples] == [str(i) for i in range(16)]
    assert result.examples[0].prompt == "Item: apple 100\nColour:"
    assert (result.examples[0].target, result.examples[0].details["gold_choice"]) == (0, "red")
    assert result.examples[0].details["choice"] == ["red", "green", "blue", "yellow"][int(result.examples[0].output)]
    assert result.lm_eval.sources["colours_mc"].kind == "data_files"
    assert result.lm_eval.results["colours_mc"]["acc"] == pytest.approx(result.metrics["acc"])


def test_a_threshold_on_a_metric_the_task_does_not_report_fails_the_candidate(colour_task, tmp_path):
    result = evaluate(colour_task(top='thresholds: {exact_match: ">= 0.5"}\n'), "base")
    assert result.failures == [
        "threshold on 'exact_match', which task 'colours.yaml' does not report (it reports accuracy, acc, acc_norm)"
    ]


def test_a_group_is_reported_per_task_and_as_lm_eval_aggregates_it(tmp_path: Path, tiny_model: Path):
    (tmp_path / "warm.yaml").write_text(COLOUR_TASK.format(name="warm_colours"), encoding="utf-8")
    (tmp_path / "cool.yaml").write_text(COLOUR_TASK.format(name="cool_colours"), encoding="utf-8")
    (tmp_path / "all.yaml").write_text(
        textwrap.dedent(
            """\
            group: all_colours
            task: [warm_colours, cool_colours]
            aggregate_metric_list:
              - {metric: acc, aggregation: mean, weight_by_size: true}
            """
        ),
        encoding="utf-8",
    )
    write_jsonl(tmp_path / "data" / "colours.jsonl", _colour_rows(COLOUR_WORDS + COLOUR_WORDS[:4]))
    suite = _suite(
        tmp_path,
        f"""\
        suite: colour-group
        model: {tiny_model}
        lm_eval: {{task: all.yaml, data_files: {{test: data/colours.jsonl}}}}
        """,
    )
    result = evaluate(suite, "base")
    assert result.n == 24  # both tasks read the same 12 rows
    assert {e.id.split("/")[0] for e in result.examples} == {"warm_colours", "cool_colours"}
    for task in ("warm_colours", "cool_colours"):
        own = [e.details["metrics"]["acc"] for e in result.examples if e.details["task"] == task]
        assert result.metrics[f"{task}/acc"] == pytest.approx(sum(own) / 12)
    every = [e.details["metrics"]["acc"] for e in result.examples]
    assert result.metrics["acc"] == pytest.approx(sum(every) / 24)  # weight_by_size: the pooled mean
    assert result.lm_eval.group_subtasks == {"all_colours": ["warm_colours", "cool_colours"]}


def test_task_code_runs_only_when_the_suite_trusts_it(colour_task, tmp_path: Path):
    (tmp_path / "coded_utils.py").write_text(
        "def process_docs(dataset):\n    return dataset.map(lambda d: {**d, 'text': d['text'].upper()})\n"
    )
    (tmp_path / "coded.yaml").write_text(
        COLOUR_TASK.format(name="coded") + "process_docs: !function coded_utils.process_docs\n", encoding="utf-8"
    )
    with pytest.raises(SuiteError) as refused:
        evaluate(colour_task(task="coded.yaml"), "base", backend=ScriptedBackend(default="x"))
    assert str(refused.value) == (
        f"{tmp_path / 'task.eval.yaml'}:4: task 'coded' runs Python: `process_docs: !function "
        f"coded_utils.process_docs` in {tmp_path / 'coded.yaml'}; a task of your own runs its code only when "
        "the suite trusts it\n  fix: review the function, then set `lm_eval: {trust_task_code: true}`"
    )
    trusted = evaluate(colour_task("trust_task_code: true\n", task="coded.yaml"), "base")
    assert trusted.examples[0].prompt == "Item: APPLE 100\nColour:"


def test_code_of_a_task_shipped_in_lm_eval_is_a_dependencys_even_when_included(tmp_path: Path):
    import lm_eval.tasks

    from evalkit.harness.loading import task_code

    shipped = lm_eval.tasks.TaskManager().task_index["hellaswag"].yaml_path  # names process_docs: !function
    own = tmp_path / "mine.yaml"
    own.write_text(f"include: {shipped}\ntask: my_hellaswag\n", encoding="utf-8")
    assert list(task_code(own)) == []
    own.write_text(own.read_text() + "process_results: !function mine.score\n", encoding="utf-8")
    assert list(task_code(own)) == [("process_results", "mine.score", own)]


# --------------------------------------------------------------------------- data sources and their errors


def test_an_unknown_task_is_refused_at_its_line_with_the_closest_names(colour_task, tmp_path: Path):
    suite = _suite(
        tmp_path,
        """\
        suite: typo
        lm_eval:
          limit: 5
          task: arc_easyy
        """,
    )
    with pytest.raises(SuiteError) as refused:
        evaluate(suite, "base", backend=ScriptedBackend(default="x"))
    assert str(refused.value).startswith(
        f"{suite}:4: lm_eval has no task or group 'arc_easyy' (did you mean 'arc_easy'"
    )


def test_a_missing_split_is_named(colour_task, tmp_path: Path):
    suite = _suite(
        tmp_path,
        f"""\
        suite: five-shot
        lm_eval:
          task: gsm8k
          num_fewshot: 5
          data_files: {{test: {tmp_path / "data" / "colours.jsonl"}}}
        """,
    )
    with pytest.raises(SuiteError) as refused:
        evaluate(suite, "base", backend=ScriptedBackend(default="x"))
    assert str(refused.value) == (
        f"{suite}:5: task 'gsm8k' takes its few-shot examples from split 'train', which `data_files:` does not "
        "hold\n  fix: add that split to `data_files:` ({train: FILE}), or set `lm_eval: {num_fewshot: 0}`"
    )


def test_data_files_of_another_schema_name_the_missing_field(tmp_path: Path, tiny_model: Path):
    write_jsonl(tmp_path / "arc.jsonl", [{"id": "q1", "prompt": "Which is a gas?", "answer": "B"}])
    suite = _suite(
        tmp_path,
        f"""\
        suite: wrong-schema
        model: {tiny_model}
        lm_eval:
          task: arc_easy
          data_files: arc.jsonl
        """,
    )
    with pytest.raises(SuiteError) as refused:
        evaluate(suite, "base")
    message = str(refused.value)
    assert message.startswith(f"{suite}:5: task 'arc_easy' reads field 'question', which the documents of ")
    assert str(tmp_path / "arc.jsonl") in message


def test_the_mirror_is_used_when_it_holds_the_dataset(tmp_path: Path, tiny_model: Path, monkeypatch):
    mirror = tmp_path / "mirror"
    rows = [
        {
            "id": f"m{i}",
            "question": f"Which colour is item {i}?",
            "choices": {"text": ["red", "blue"], "label": ["A", "B"]},
            "answerKey": "A",
        }
        for i in range(3)
    ]
    write_jsonl(mirror / "allenai" / "ai2_arc" / "ARC-Easy" / "test.jsonl", rows)
    monkeypatch.setenv(MIRROR_VARIABLE, str(mirror))
    suite = _suite(tmp_path, f"suite: mirrored\nmodel: {tiny_model}\nlm_eval: {{task: arc_easy}}\n")
    result = evaluate(suite, "base")
    assert result.n == 3
    assert result.examples[2].prompt == "Question: Which colour is item 2?\nAnswer:"
    source = result.lm_eval.sources["arc_easy"]
    assert (source.kind, source.dataset) == ("mirror", "allenai/ai2_arc ARC-Easy")
    assert source.files == {"test": str(mirror / "allenai" / "ai2_arc" / "ARC-Easy" / "test.jsonl")}


def test_without_a_source_the_message_names_all_three_ways(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(MIRROR_VARIABLE, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    suite = _suite(tmp_path, "suite: offline\nlm_eval: {task: arc_easy}\n")
    with pytest.raises(SuiteError) as refused:
        evaluate(suite, "base", backend=ScriptedBackend(default="x"))
    message = str(refused.value)
    assert message.startswith(f"{suite}:2: the dataset of task 'arc_easy' could not be read")
    assert "`lm_eval: {data_files: ...}`" in message
    assert f"{MIRROR_VARIABLE} (now unset)" in message
    assert "allow the hub" in message


def test_an_lm_eval_suite_refuses_a_dataset_section(tmp_path: Path):
    suite = _suite(tmp_path, "suite: both\ndataset: {path: x.jsonl}\nlm_eval: {task: arc_easy}\n")
    with pytest.raises(SuiteError, match="an `lm_eval:` suite reads its dataset from the lm-eval task"):
        load_suite(suite)


# --------------------------------------------------------------------------- lm-eval's own command


def test_lm_evals_own_command_runs_the_evalkit_model(colour_task, tmp_path: Path, tiny_model: Path):
    task = tmp_path / "tasks" / "colours_cli.yaml"
    task.parent.mkdir()
    data = json.dumps({"test": str(tmp_path / "data" / "colours.jsonl")})
    task.write_text(
        COLOUR_TASK.format(name="colours_cli") + f"dataset_kwargs: {{data_files: {data}}}\n", encoding="utf-8"
    )
    command = [
        str(Path(sys.executable).parent / "evalkit"), "lm-eval", "run", "--model", "evalkit",
        "--model_args", f"name={tiny_model}", "--tasks", "colours_cli", "--include_path", str(task.parent),
        "--output_path", str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (results,) = (tmp_path / "out").rglob("results_*.json")
    theirs = json.loads(results.read_text())["results"]["colours_cli"]
    ours = evaluate(colour_task(), "base")  # the same rows through a suite
    assert theirs["acc,none"] == pytest.approx(ours.metrics["acc"])
    assert theirs["acc_norm,none"] == pytest.approx(ours.metrics["acc_norm"])


# --------------------------------------------------------------------------- retention


def _retention_suites(folder: Path, model: Path, rows: list[dict]) -> None:
    """Two colour suites on the base model: one whose gold answers are the base model's own (wrong) colours,
    which an adapter that learns the real colours must forget; one with the real colours."""
    template = "Item: {{ text }}\\nColour:"
    for name, key in (("hurt", "base_says"), ("helped", "label")):
        write_jsonl(folder / "data" / f"{name}.jsonl", [{**r, "target": r[key]} for r in rows])
        _suite(
            folder,
            f"""\
            suite: {name}
            model: {model}
            dataset: {{path: data/{name}.jsonl}}
            task: {{kind: classify, choices: [red, green, blue, yellow], target: target}}
            candidates:
              base: {{template: "{template}"}}
            """,
            f"{name}.eval.yaml",
        )


def test_retention_catches_an_adapter_that_forgot_and_passes_one_that_did_not(colours, tmp_path: Path, colour_model):
    probe = EvalSession(root=tmp_path, reports_dir=tmp_path / "reports")
    spec = probe.spec(colours(extra="retention: {suites: [hurt.eval.yaml, helped.eval.yaml], max_drop: 0.02}\n"))
    base = probe.run(spec, "base")
    test_rows = [json.loads(line) for line in (tmp_path / "data" / "test.jsonl").read_text().splitlines()]
    wrong = [{**row, "base_says": e.output} for row, e in zip(test_rows, base.examples) if e.output != row["label"]]
    assert len(wrong) >= 20  # the random base model is wrong on most colours
    _retention_suites(tmp_path, colour_model, wrong)

    session = EvalSession(root=tmp_path, reports_dir=tmp_path / "reports")
    spec = session.spec(tmp_path / "colours.eval.yaml")
    lora = session.run(spec, "lora")
    hurt, helped = session.retention(spec, "colours-lora")
    assert lora.retention == [hurt, helped]
    assert (hurt.suite, hurt.base, hurt.shared) == ("hurt", 1.0, len(wrong))  # right by construction on the base
    assert hurt.lost and hurt.worse >= 15 and hurt.p_value < 0.05
    assert hurt.delta == pytest.approx(-hurt.worse / len(wrong))
    assert [f.id for f in hurt.flips][:3] == [r["id"] for r in wrong if r["id"] in {f.id for f in hurt.flips}][:3]
    assert all(f.base_output != f.adapted_output for f in hurt.flips)
    assert not helped.lost and helped.delta > 0.5
    assert lora.failures == []  # the candidate's own gates; the loss fails the adapter's retention test
    controller = EvalSession(root=tmp_path, reports_dir=tmp_path / "reports")  # as an xdist worker hands over
    controller.merge_worker(session.worker_output())
    assert controller.results[("colours", "lora")].retention == [hurt, helped]
    from evalkit.harness.retention import retention_failure

    assert retention_failure(hurt).startswith(f"adapter colours-lora: {hurt.delta:+.3f} [")
    assert "LOST: more than max_drop 0.02 with McNemar p < 0.05; rows it forgot: " + hurt.flips[0].id in (
        retention_failure(hurt)
    )

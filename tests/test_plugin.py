"""The pytest plugin, driven through pytester on a tiny random model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import TICKET_ROWS, write_jsonl

SUITE = """\
suite: tickets
model: {model}
dataset: {{path: data/tickets.jsonl}}
task: {{kind: classify, choices: [billing, technical, account, shipping, other], target: label}}
candidates:
  good:
    template: "Ticket: {{{{ text }}}}\\nCategory:"
  bad:
    prompt: prompts/bad.j2
thresholds:
  accuracy: ">= 0"
  bad: {{accuracy: "> 1"}}
"""


@pytest.fixture
def project(pytester: pytest.Pytester, tiny_model):
    write_jsonl(pytester.path / "data" / "tickets.jsonl", TICKET_ROWS)
    (pytester.path / "prompts").mkdir()
    (pytester.path / "prompts" / "bad.j2").write_text("{{ text }}\n")
    pytester.makeini(
        "[pytest]\nmarkers =\n    slow: slow suites\nfilterwarnings =\n    ignore::pytest.PytestAssertRewriteWarning\n"
    )

    def write(name: str, text: str):
        path = pytester.path / name
        path.write_text(
            textwrap.dedent(text).replace("{model}", str(tiny_model))
            if "{{" not in text
            else text.format(model=tiny_model)
        )
        return path

    write("tickets.eval.yaml", SUITE)
    pytester.write = write
    return pytester


def read_results(pytester):
    return json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())


def read_examples(pytester):
    lines = (pytester.path / "reports" / "latest" / "examples.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_each_candidate_is_one_item(project):
    result = project.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["tickets.eval.yaml::good", "tickets.eval.yaml::bad"])


def test_thresholds_pass_and_fail_with_a_clear_message(project):
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*tickets::bad failed (6 examples):", "*accuracy 0.* (95% CI 0.*-0.*) does not meet '> 1'"]
    )
    result.stdout.fnmatch_lines(
        [
            "*evalkit results*",
            "tickets (classify, model *",
            "candidate*n*accuracy*acc_norm*macro_f1*threshold*verdict*time*tok/ex*ms/ex*training",
            "*",
            "bad * 6 *accuracy > 1 *FAIL * -",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_run_record_holds_metrics_and_rendered_examples(project, tiny_backend):
    project.runpytest()
    record = read_results(project)
    assert record["schema_version"] == 3
    assert record["run"]["evalkit_version"] == "0.1.0"
    good = record["suites"]["tickets"]["good"]
    assert good["n"] == 6 and good["passed"] is True and good["thresholds"] == {"accuracy": ">= 0"}
    assert set(good["metrics"]) == {"accuracy", "acc_norm", "macro_f1"}
    assert good["tokens"]["prompt"] > 0 and good["wall_s"] > 0
    assert good["cost"]["prompt_tokens_per_example"] == round(good["tokens"]["prompt"] / 6, 1)
    assert 0 < good["compute_s"] <= good["wall_s"]
    assert good["cost"]["ms_per_example"] == round(1000 * good["compute_s"] / 6, 1)
    assert good["cache"]["hits"] == 0 and good["cache"]["misses"] == 6
    assert record["suites"]["tickets"]["bad"]["passed"] is False

    examples = [e for e in read_examples(project) if e["candidate"] == "good"]
    assert [e["prompt"] for e in examples] == [f"Ticket: {r['text']}\nCategory:" for r in TICKET_ROWS]
    assert [e["target"] for e in examples] == [r["label"] for r in TICKET_ROWS]
    assert good["metrics"]["accuracy"] == pytest.approx(sum(e["correct"] for e in examples) / 6, abs=1e-6)
    # The chosen label is the argmax of the backend's log-likelihoods, computed independently here.
    from evalkit.backends.base import ChoiceRequest

    choices = ["billing", "technical", "account", "shipping", "other"]
    direct = tiny_backend.score_choices([ChoiceRequest(e["prompt"], tuple(" " + c for c in choices)) for e in examples])
    assert [e["output"] for e in examples] == [choices[max(range(5), key=lambda i: d.logprobs[i])] for d in direct]


def test_keyword_selection_and_last_failed(project):
    result = project.runpytest("-k", "good")
    result.assert_outcomes(passed=1, deselected=1)
    project.runpytest("-p", "cacheprovider")
    rerun = project.runpytest("-p", "cacheprovider", "--lf")
    rerun.assert_outcomes(failed=1)
    rerun.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure*"])


def test_suite_markers_select_items(project):
    project.write("slow.eval.yaml", SUITE.replace("suite: tickets", "suite: slow-tickets") + "markers: [slow]\n")
    result = project.runpytest("-m", "slow", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["slow.eval.yaml::good", "slow.eval.yaml::bad", "2/4 tests collected (2 deselected)*"])


def test_junit_xml_carries_metrics(project):
    project.runpytest("--junitxml=out.xml")
    tree = ET.parse(project.path / "out.xml")
    props = {}
    for case in tree.iter("testcase"):
        props[case.get("name")] = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert set(props) == {"good", "bad"}
    assert props["good"]["evalkit.n"] == "6"
    assert props["bad"]["evalkit.passed"] == "False"
    assert 0.0 <= float(props["good"]["evalkit.accuracy"]) <= 1.0
    assert "evalkit.macro_f1.ci95" in props["good"]


def test_invalid_suite_fails_alone_and_others_still_run(project):
    project.write(
        "broken.eval.yaml",
        "suite: broken\ndataset: {path: data/tickets.jsonl}\ntask: {kind: classify}\ncandidatez: {}\n",
    )
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*broken.eval.yaml:4: unknown key 'candidatez' (did you mean 'candidates'?)"])
    assert "INTERNALERROR" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_duplicate_suite_names_are_an_error(project):
    project.write("copy.eval.yaml", SUITE)
    result = project.runpytest()
    result.stdout.fnmatch_lines(["*tickets.eval.yaml:1: suite name 'tickets' is also used by *copy.eval.yaml"])


def test_template_error_names_row_and_other_candidates_pass(project):
    project.write(
        "typo.eval.yaml", SUITE.replace("suite: tickets", "suite: typo").replace("{{{{ text }}}}", "{{{{ txt }}}}")
    )
    result = project.runpytest("typo.eval.yaml")
    result.assert_outcomes(failed=2)  # 'good' hits the undefined variable, 'bad' its threshold
    result.stdout.fnmatch_lines(
        [
            "*typo.eval.yaml:6: template of candidate 'good': 'txt' is undefined (did you mean 'text'?) while rendering tickets.jsonl:1 (template line 1)",
            "*fix: use a field the row has (choices, examples, id, label, text), or guard it with {% if x is defined %}",
        ]
    )


def test_evalkit_fixture_runs_a_suite_from_python(project):
    project.makepyfile(
        test_api="""
        def test_api(evalkit):
            result = evalkit.run("tickets.eval.yaml", candidate="good")
            assert result.n == 6
            assert len(result.examples) == 6
            assert result.metrics["accuracy"] == sum(e.correct for e in result.examples) / 6
            assert evalkit.run("tickets.eval.yaml", candidate="good") is result  # evaluated once
    """
    )
    result = project.runpytest("test_api.py")
    result.assert_outcomes(passed=1)
    assert set(read_results(project)["suites"]["tickets"]) == {"good"}


def test_row_limit_option(project):
    project.runpytest("--evalkit-limit", "2")
    record = read_results(project)
    assert record["suites"]["tickets"]["good"]["n"] == 2
    assert record["run"]["row_limit"] == 2


def test_reports_folder_option(project):
    project.runpytest("--evalkit-reports", "elsewhere")
    assert (project.path / "elsewhere" / "latest" / "results.json").is_file()
    assert not (project.path / "reports").exists()


GENERATE = """\
suite: gen
model: {model}
dataset: {{path: data/tickets.jsonl}}
task: {{kind: generate, target: label, max_new_tokens: 4, stop: ["\\n"], scorer: contains}}
candidates:
  plain: {{template: "Ticket: {{{{ text }}}}\\nCategory:"}}
  chat: {{template: "Classify: {{{{ text }}}}", chat: true, system: "Be brief."}}
thresholds:
  accuracy: "<= 1"
"""


def test_generate_suite_with_chat_candidate(project):
    project.write("gen.eval.yaml", GENERATE)
    result = project.runpytest("gen.eval.yaml")
    result.assert_outcomes(passed=2)
    examples = [e for e in read_examples(project) if e["candidate"] == "chat"]
    assert examples[0]["prompt"] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nClassify: I was charged twice<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert all("\n" not in e["output"] for e in examples)
    assert set(read_results(project)["suites"]["gen"]["plain"]["metrics"]) == {"accuracy", "score"}


def test_plugin_import_does_not_load_torch():
    # reading an lm-eval suite (as collection does) imports neither lm_eval nor what it runs on
    code = (
        "import sys, evalkit.plugin, evalkit.suite, evalkit.runner, evalkit.train; "
        "evalkit.suite.load_suite('suites/standard/arc_easy.eval.yaml'); "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'peft', 'lm_eval') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


def test_xdist_workers_publish_into_one_run_record(project):
    project.write("copy.eval.yaml", SUITE.replace("suite: tickets", "suite: tickets-copy"))
    result = project.runpytest("-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=2, failed=2)
    record = read_results(project)
    assert set(record["suites"]) == {"tickets", "tickets-copy"}
    assert record["suites"]["tickets"]["good"]["metrics"] == record["suites"]["tickets-copy"]["good"]["metrics"]
    assert len(read_examples(project)) == 24


ADAPTER_SUITE = """\
suite: tickets-tuned
model: {model}
dataset: {{path: data/tickets.jsonl}}
task: {{kind: classify, choices: [billing, technical, account, shipping, other], target: label}}
train:
  tickets-lora:
    output: adapters/tickets-lora
    data: data/train.jsonl
    template: "Ticket: {{{{ text }}}}\\nCategory:"
    epochs: 1
    lora: {{r: 2, alpha: 4, dropout: 0.0, target_modules: [q_proj, v_proj]}}
candidates:
  plain: {{template: "Ticket: {{{{ text }}}}\\nCategory:"}}
  lora: {{template: "Ticket: {{{{ text }}}}\\nCategory:", adapter: tickets-lora}}
"""
TRAIN_ROWS = [
    {"id": f"t{i}", "text": f"{r['text']} (case {i})", "label": r["label"]} for i, r in enumerate(TICKET_ROWS * 3)
]


@pytest.fixture
def tuned(project):
    """A suite with an adapter. Runs that train use a subprocess: pytester's in-process runs unload and
    re-import transformers and peft, which breaks their class checks when saving a checkpoint."""
    write_jsonl(project.path / "data" / "train.jsonl", TRAIN_ROWS)
    project.write("tuned.eval.yaml", ADAPTER_SUITE)
    return project


def test_adapter_candidate_trains_once_and_shows_its_cost(tuned):
    result = tuned.runpytest_subprocess("tuned.eval.yaml")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*adapter 'tickets-lora': training it because it has not been trained yet (18 rows, 1 epochs)",
            "*tickets-lora: epoch 1/1 train loss * val loss * val accuracy *",
        ]
    )
    result.stdout.fnmatch_lines(
        ["candidate*tok/ex*ms/ex*training", "*", "lora * 6 * PASS *s, 0.4k params, * kB", "plain * 6 * PASS * -"]
    )
    record = read_results(tuned)["suites"]["tickets-tuned"]["lora"]
    training = json.loads((tuned.path / "adapters" / "tickets-lora" / "training.json").read_text())
    assert record["adapter"]["content_hash"] == training["content_hash"]
    assert record["adapter"]["trained_now"] is True
    assert record["cost"]["train_s"] == training["train_seconds"]
    assert record["cost"]["trainable_parameters"] == training["trainable_parameters"] == 2 * 2 * (64 + 48)
    again = tuned.runpytest_subprocess("tuned.eval.yaml")
    again.assert_outcomes(passed=2)
    assert "training it" not in again.stdout.str()
    assert read_results(tuned)["suites"]["tickets-tuned"]["lora"]["adapter"]["trained_now"] is False


def test_train_never_fails_the_candidate_that_needs_a_missing_adapter(tuned):
    result = tuned.runpytest("tuned.eval.yaml", "--evalkit-train=never")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*tuned.eval.yaml:6: adapter 'tickets-lora' cannot be used: it has not been trained yet",
            "*fix: train it with `evalkit train tuned.eval.yaml --adapter tickets-lora`, or run with --evalkit-train=auto",
        ]
    )
    assert not (tuned.path / "adapters" / "tickets-lora").exists()


def test_trained_adapter_fixture(tuned):
    tuned.makepyfile(
        test_adapter="""
        def test_adapter(trained_adapter):
            adapter = trained_adapter("tickets-lora", suite="tuned.eval.yaml")
            assert adapter.trained_now
            assert (adapter.path / "adapter_model.safetensors").is_file()
            assert adapter.record["data"]["rows"] == 18
            assert trained_adapter("tickets-lora", suite="tuned.eval.yaml") is adapter
    """
    )
    tuned.runpytest_subprocess("test_adapter.py").assert_outcomes(passed=1)


def test_cli_trains_then_reports_up_to_date(tuned):
    first = tuned.run(sys.executable, "-m", "evalkit.cli", "train", "tuned.eval.yaml")
    assert first.ret == 0
    first.stdout.fnmatch_lines(
        [
            "tickets-lora: trained -> *adapters/tickets-lora",
            "  16 training rows, 2 validation rows, best validation accuracy * (checkpoint-2)",
            "  *s training, * tokens/s, 448 trainable parameters, 0.00 MB",
        ]
    )
    second = tuned.run(sys.executable, "-m", "evalkit.cli", "train", "tuned.eval.yaml", "--adapter", "tickets-lora")
    second.stdout.fnmatch_lines(["tickets-lora: up to date -> *"])
    folds = tuned.run(sys.executable, "-m", "evalkit.cli", "train", "tuned.eval.yaml", "--folds", "2")
    folds.stdout.fnmatch_lines(["tickets-lora: trained -> *", "  2-fold cross-validation accuracy 0.* ± 0.*"])
    again = tuned.run(sys.executable, "-m", "evalkit.cli", "train", "tuned.eval.yaml", "--folds", "2")
    again.stdout.fnmatch_lines(["tickets-lora: up to date -> *", "*", "*", "  2-fold cross-validation accuracy *"])
    missing = tuned.run(sys.executable, "-m", "evalkit.cli", "train", "tuned.eval.yaml", "--adapter", "nope")
    assert missing.ret == 2
    missing.stderr.fnmatch_lines(
        [
            "evalkit: *tuned.eval.yaml: suite 'tickets-tuned' defines no adapter 'nope'",
            "  fix: adapters in its `train:` section: tickets-lora",
        ]
    )

"""Integration tests on the real default model, SmolLM2-135M-Instruct (converted once into the cache)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import torch

from tests.test_suite import CONTRACT

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
TICKETS = REPO / "suites" / "tickets.eval.yaml"
ORDERS = REPO / "suites" / "orders.eval.yaml"
CHOICES = ["billing", "technical", "account", "shipping", "other"]


@pytest.fixture(scope="module")
def smollm():
    """The default model and tokenizer loaded with plain transformers, independently of evalkit's backend."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalkit.models import resolve_model

    path = resolve_model("smollm2-135m-instruct").path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def rows(path: Path, n: int) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[:n]]


def render(template_path: Path, row: dict) -> str:
    return jinja2.Template(template_path.read_text()).render(**row, choices=CHOICES, examples=[])


def direct_predictions(smollm, prompts: list[str]) -> list[str]:
    """For each prompt, the choice whose tokens have the highest summed log-probability after it: one
    forward pass per prompt over its five full sequences (prompt + choice), right-padded, no cache."""
    model, tok = smollm
    predictions = []
    with torch.no_grad():
        for prompt in prompts:
            context = tok(prompt).input_ids
            wholes = [tok(prompt + " " + choice).input_ids for choice in CHOICES]
            width = max(map(len, wholes))
            batch = torch.tensor([w + [tok.pad_token_id] * (width - len(w)) for w in wholes])
            logprobs = model(batch).logits.log_softmax(-1)  # right padding cannot change earlier positions
            scores = [
                sum(float(logprobs[k, i - 1, w[i]]) for i in range(len(context), len(w))) for k, w in enumerate(wholes)
            ]
            predictions.append(CHOICES[max(range(len(CHOICES)), key=scores.__getitem__)])
    return predictions


@pytest.mark.parametrize(("candidate", "n"), [("inline", 40), ("zero_shot", 24)])
def test_classify_accuracy_equals_a_direct_transformers_computation(evalkit, smollm, candidate, n):
    result = evalkit.run(TICKETS, candidate=candidate, limit=n)
    data = rows(REPO / "suites" / "data" / "tickets_test.jsonl", n)
    if candidate == "inline":
        prompts = [f"Ticket: {r['text']}\nCategory:" for r in data]
    else:
        prompts = [render(REPO / "prompts" / "tickets" / "zero_shot.j2", r) for r in data]
    expected = direct_predictions(smollm, prompts)
    assert [e.prompt for e in result.examples] == prompts
    assert [e.output for e in result.examples] == expected
    direct_accuracy = sum(p == r["label"] for p, r in zip(expected, data)) / n
    assert result.metrics["accuracy"] == direct_accuracy
    assert result.n == n


def test_generate_equals_transformers_greedy_decoding(evalkit, smollm):
    model, tok = smollm
    n = 12
    result = evalkit.run(ORDERS, candidate="zero_shot", limit=n)
    data = rows(REPO / "suites" / "data" / "orders_test.jsonl", n)
    correct = 0
    for example, row in zip(result.examples, data):
        prompt = render(REPO / "prompts" / "orders" / "zero_shot.j2", row)
        ids = torch.tensor([tok(prompt).input_ids])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=24,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n")[0]
        assert example.prompt == prompt
        assert example.output == text
        correct += text.strip().lstrip("#").casefold() == row["order_id"].casefold()
    assert result.metrics["accuracy"] == correct / n


def test_few_shot_candidates_answer_as_when_every_row_is_computed_whole(evalkit):
    """The demo's few_shot prompts share their examples: computed once, the answers do not change."""
    from evalkit.backends.base import ChoiceRequest, GenerateRequest
    from evalkit.backends.hf import HFBackend
    from evalkit.models import resolve_model

    resolved = resolve_model("smollm2-135m-instruct")
    shared = HFBackend(resolved.path, fingerprint=resolved.fingerprint)
    whole = HFBackend(resolved.path, fingerprint=resolved.fingerprint)
    whole.min_shared = 10**9  # no prefix is shared: every row computed in full
    tickets = evalkit.run(TICKETS, candidate="few_shot", limit=24)
    requests = [ChoiceRequest(e.prompt, tuple(" " + c for c in CHOICES)) for e in tickets.examples]
    scored, reference = shared.score_choices(requests), whole.score_choices(requests)
    (prefix,) = shared.prefixes.prefixes(None)
    assert len(prefix) > 100  # the instructions and the four examples
    for example, result, expected in zip(tickets.examples, scored, reference):
        assert result.logprobs == pytest.approx(expected.logprobs, abs=1e-4)
        assert list(example.details["logprobs"].values()) == pytest.approx(expected.logprobs, abs=1e-4)
    orders = evalkit.run(ORDERS, candidate="few_shot", limit=12)
    requests = [GenerateRequest(e.prompt, 24, ("\n",)) for e in orders.examples]
    texts = [r.text for r in shared.generate(requests)]
    assert texts == [r.text for r in whole.generate(requests)]
    assert texts == [e.output for e in orders.examples]


def link_demo_files(root: Path) -> None:
    (root / "suites").mkdir()
    (root / "suites" / "data").symlink_to(REPO / "suites" / "data")
    (root / "prompts").symlink_to(REPO / "prompts")


def test_a_clearly_worse_prompt_fails_the_demo_threshold(pytester):
    link_demo_files(pytester.path)
    suite = TICKETS.read_text()
    # The same suite with a prompt that never shows the model the ticket.
    worse = suite.split("candidates:")[0] + (
        'candidates:\n  no_ticket:\n    template: "Category:"\nthresholds:\n  accuracy: ">= 0.50"\n'
    )
    (pytester.path / "suites" / "worse.eval.yaml").write_text(worse)
    result = pytester.runpytest("suites/worse.eval.yaml", "--evalkit-limit", "60")
    result.assert_outcomes(failed=1)
    accuracy = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())["suites"][
        "ticket-routing"
    ]["no_ticket"]["metrics"]["accuracy"]
    assert accuracy < 0.35  # one label for every ticket: about one in five right


def test_the_documented_contract_runs_as_written(pytester):
    link_demo_files(pytester.path)
    (pytester.path / "suites" / "contract.eval.yaml").write_text(CONTRACT)
    result = pytester.runpytest("suites/contract.eval.yaml", "--evalkit-limit", "30")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 3
    record = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())
    suite = record["suites"]["ticket-routing"]
    assert set(suite) == {"zero_shot", "few_shot", "inline"}
    for name, candidate in suite.items():
        assert candidate["n"] == 30
        limit = 0.30 if name == "zero_shot" else 0.60
        assert candidate["passed"] == (candidate["metrics"]["accuracy"] >= limit)
    assert outcomes.get("failed", 0) == sum(not c["passed"] for c in suite.values())


TRAIN_CONTRACT = """\
train:
  tickets-lora:
    output: ../adapters/tickets-lora
    data: data/tickets_train.jsonl          # rows with the same fields as the test set
    prompt: ../prompts/tickets/plain.j2      # rendered exactly as the candidate renders it
    epochs: 3
    learning_rate: 2.0e-4
    batch_size: 8
    lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj]}
    validation: {fraction: 0.1, early_stopping_patience: 2}
    seed: 0
candidates:
  lora:
    prompt: ../prompts/tickets/plain.j2
    adapter: tickets-lora
"""


def test_the_documented_train_contract_trains_once_then_reuses(pytester):
    """The `train:` example of the adapter documentation, as written, on the real model (about a minute)."""
    link_demo_files(pytester.path)
    header = TICKETS.read_text().split("train:")[0]
    (pytester.path / "suites" / "tuned.eval.yaml").write_text(header + TRAIN_CONTRACT)
    first = pytester.runpytest_subprocess("suites/tuned.eval.yaml", "--evalkit-limit", "40")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(
        ["*adapter 'tickets-lora': training it because it has not been trained yet (100 rows, 3 epochs)"]
    )
    adapter = pytester.path / "adapters" / "tickets-lora"
    training = json.loads((adapter / "training.json").read_text())
    assert training["config"]["lora"] == {
        "r": 8,
        "alpha": 16.0,
        "dropout": 0.05,
        "target_modules": ["q_proj", "v_proj"],
    }
    assert training["data"]["train_rows"] == 90 and training["data"]["validation_rows"] == 10
    assert training["trainable_parameters"] == 30 * 8 * ((576 + 576) + (576 + 192))  # 30 layers, q and v
    assert 1 <= len(training["validation"]) <= 3
    assert (
        json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "smollm2-135m-instruct"
    )
    record = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())
    lora = record["suites"]["ticket-routing"]["lora"]
    assert lora["adapter"]["content_hash"] == training["content_hash"] and lora["n"] == 40

    again = pytester.runpytest_subprocess("suites/tuned.eval.yaml", "--evalkit-limit", "40", "--evalkit-train=never")
    again.assert_outcomes(passed=1)
    assert "training it" not in again.stdout.str()
    rerun = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())["suites"]["ticket-routing"][
        "lora"
    ]
    assert rerun["metrics"] == lora["metrics"]


def test_a_worse_prompt_regresses_against_the_baseline(pytester):
    """The baseline workflow on the real model: accept a prompt, make it clearly worse, and the run fails
    on the regression (not on a threshold: the suite has none), naming the change and the flips."""
    link_demo_files(pytester.path)
    head = TICKETS.read_text().split("\ntrain:")[0].replace("limit: 200", "limit: 60")
    suite = pytester.path / "suites" / "gate.eval.yaml"
    candidate = 'candidates:\n  inline:\n    template: "{template}"\nbaseline: {{max_drop: 0.02}}\n'
    suite.write_text(head + "\n" + candidate.format(template="Ticket: {{ text }}\\nCategory:"))
    pytester.runpytest("suites/", "--evalkit-update-baseline").assert_outcomes(passed=1)
    pytester.runpytest("suites/").assert_outcomes(passed=1)  # unchanged: no flips at all

    suite.write_text(head + "\n" + candidate.format(template="Category:"))  # the model no longer sees the ticket
    result = pytester.runpytest("suites/")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "ticket-routing::inline failed (60 examples):",
            "*regression against the baseline: accuracy dropped 0.* (more than max_drop 0.02) and McNemar p = * < alpha 0.05: "
            "0.* -> 0.* on 60 shared examples*",
            "  since the baseline: prompt template changed*",
            "first examples that got worse (* in all; every flip is in reports/latest/summary.md):",
        ]
    )
    comparison = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())["suites"][
        "ticket-routing"
    ]["inline"]["baseline"]
    assert comparison["status"] == "regressed" and comparison["gate"]["p_value"] < 0.05
    assert comparison["gate"]["worse"] > comparison["gate"]["better"]
    assert comparison["shared"] == 60 and comparison["changes"][0].startswith("prompt template changed")


def test_the_demo_robustness_section_finds_real_flips(evalkit, request):
    """The demo's robustness section as written, on the real model, for the bare prompt: every reported
    flip is real: the perturbed ticket, scored alone, gives the reported answer."""
    from evalkit.backends.base import ChoiceRequest
    from evalkit.plugin import SESSION_KEY
    from evalkit.tasks import prepare

    result = evalkit.run("suites/tickets.eval.yaml", candidate="inline")
    r = result.robustness.as_json()
    assert (r["examples"], r["tries"]) == (40, 10)
    assert result.metrics["invariance"] == r["held"] / 40
    assert 0.2 <= result.metrics["invariance"] <= 0.7  # measured 0.375 on SmolLM2-135M-Instruct
    assert len(r["flipped"]) == 40 - r["held"]

    spec = evalkit.suite("suites/tickets.eval.yaml")
    session = request.config.stash[SESSION_KEY]
    backend = session.backend_for(spec.model, spec.path.parent)
    from evalkit.data import load_dataset

    dataset = load_dataset(spec.dataset_path, limit=spec.dataset_limit)
    prepared = prepare(spec, spec.candidates["inline"], dataset, backend.apply_chat_template)
    rows = {row.id: row for row in dataset.rows}
    choices = list(spec.task.choices)
    for flip in r["flipped"][:6]:
        prompt = prepared.render({**rows[flip["id"]].fields, **flip["perturbed"]}, choices, "check")
        scores = backend.score_choices([ChoiceRequest(prompt, tuple(" " + c for c in choices))])[0].logprobs
        assert choices[max(range(len(choices)), key=scores.__getitem__)] == flip["after"] != flip["before"]


def _demo_run(root: Path, reports: str, *args: str) -> tuple[list[dict], dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "suites",
            "-q",
            "-p",
            "no:cacheprovider",
            "--evalkit-limit",
            "4",
            "--evalkit-no-cache",
            "--evalkit-reports",
            reports,
            *args,
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=900,
    )
    latest = root / reports / "latest"
    rows = [json.loads(line) for line in (latest / "examples.jsonl").read_text().splitlines()]
    results = json.loads((latest / "results.json").read_text())["suites"]
    summary = {
        (suite, name): (
            c["n"],
            c["metrics"],
            c["ci95"],
            c["failures"],
            c["passed"],
            (c.get("robustness") or {}).get("flipped"),
        )
        for suite, candidates in results.items()
        for name, c in candidates.items()
    }
    return sorted(rows, key=lambda r: (r["suite"], r["candidate"], r["row"])), summary


def test_the_demo_suites_under_two_xdist_workers_equal_a_one_process_run(tmp_path):
    """Every demo candidate (prompts, the adapter, the robustness search) on the first 4 rows: the per-example
    rows and every metric of a `-n 2` run equal those of a one-process run. The one-process run trains the
    adapter first when the project has none yet (a fresh clone), as the demo does."""
    shutil.copytree(REPO / "suites", tmp_path / "suites", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "adapters", tmp_path / "adapters")
    (tmp_path / "prompts").symlink_to(REPO / "prompts")
    one_rows, one = _demo_run(tmp_path, "one", "--evalkit-train=auto")
    two_rows, two = _demo_run(tmp_path, "two", "--evalkit-train=never", "-n", "2")
    assert len(one) == 11 and len(one_rows) == 11 * 4  # tickets 6, orders 3 (each with a searched prompt), answers 2
    assert two_rows == one_rows
    assert two == one

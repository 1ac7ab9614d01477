"""Sampled generation with repeats: per-request random streams, pass rates, and outcomes that vary."""

from __future__ import annotations

import textwrap

import pytest

from evalkit.backends.base import GenerateRequest
from evalkit.backends.hf import HFBackend
from evalkit.runner import Resources, evaluate_candidate
from evalkit.suite import load_suite
from evalkit.tasks import sample_seed
from tests.conftest import write_jsonl

PROMPTS = ["Ticket: my invoice is wrong\nCategory:", "Question: what is 2 + 3?\nAnswer:", "The order number is"]


def test_a_sample_depends_on_its_seed_not_on_its_batch(tiny_model):
    backend = HFBackend(tiny_model, fingerprint="t", batch_size=3)
    sampled = [GenerateRequest(p, 6, (), temperature=3.0, seed=7) for p in PROMPTS]
    together = backend.generate(sampled)
    alone = [backend.generate([r])[0] for r in sampled]
    assert [r.text for r in together] == [r.text for r in alone]
    reseeded = backend.generate([GenerateRequest(PROMPTS[0], 6, (), temperature=3.0, seed=s) for s in range(8)])
    assert len({r.text for r in reseeded}) > 1  # different streams give different samples
    greedy = backend.generate([GenerateRequest(PROMPTS[0], 6, ())] * 2)
    assert greedy[0].text == greedy[1].text


def test_top_p_keeps_only_the_nucleus(tiny_model):
    backend = HFBackend(tiny_model, fingerprint="t")
    greedy = backend.generate([GenerateRequest(PROMPTS[1], 5, ())])[0].text
    # A tiny nucleus holds only the most likely token, so sampling equals greedy decoding.
    narrow = backend.generate(
        [GenerateRequest(PROMPTS[1], 5, (), temperature=5.0, top_p=1e-6, seed=s) for s in range(4)]
    )
    assert {r.text for r in narrow} == {greedy}


def test_sample_seed_is_stable():
    assert sample_seed(0, "a", 0) == sample_seed(0, "a", 0)
    assert len({sample_seed(0, "a", r) for r in range(5)} | {sample_seed(1, "a", 0)}) == 6
    assert sample_seed(0, "a", 0) == 1811790662130920900  # pinned: baselines of sampled runs stay comparable


def _suite(tmp_path, tiny_model, extra: str):
    write_jsonl(tmp_path / "qa.jsonl", [{"id": f"q{i}", "q": q, "a": "5"} for i, q in enumerate(PROMPTS * 3)])
    path = tmp_path / "qa.eval.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        suite: qa
        model: {tiny_model}
        dataset: {{path: qa.jsonl}}
        task: {{kind: generate, target: a, max_new_tokens: 3, scorer: contains{extra}}}
        candidates:
          plain: {{template: "{{{{ q }}}}"}}
        """)
    )
    return load_suite(path)


def test_repeats_give_pass_rates_and_flag_examples_that_vary(tmp_path, tiny_model):
    backend = HFBackend(tiny_model, fingerprint="t")
    spec = _suite(tmp_path, tiny_model, ", temperature: 4.0, repeats: 5")
    first = evaluate_candidate(spec, "plain", Resources(backend=lambda *_: backend))
    again = evaluate_candidate(spec, "plain", Resources(backend=lambda *_: backend))
    assert [e.details["outputs"] for e in first.examples] == [e.details["outputs"] for e in again.examples]
    assert first.repeats == 5 and first.tokens["output"] > 0
    for e in first.examples:
        assert len(e.details["outputs"]) == 5
        assert e.pass_rate == sum("5" in o for o in e.details["outputs"]) / 5
        assert e.details["flaky"] == (0 < e.pass_rate < 1)
    assert first.metrics["accuracy"] == pytest.approx(sum(e.pass_rate for e in first.examples) / len(first.examples))
    # Repeated rows with the same prompt but different ids draw different samples.
    assert len({tuple(e.details["outputs"]) for e in first.examples}) > 1
    flaky = [e.id for e in first.examples if e.details["flaky"]]
    assert flaky  # this seed gives at least one example that is right in some repeats only

    from evalkit.report.markdown import render_summary
    from evalkit.results import build_record, example_rows

    header = {"run_id": "r1", "started": "2026-11-20T10:00:00+00:00"}
    summary = render_summary(build_record(header, [first]), example_rows([first]))
    assert f"- `plain`: {len(flaky)} example(s) vary between its 5 repeats" in summary


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (", repeats: 3", "`repeats` needs sampled generation: greedy decoding (temperature 0) gives the same output"),
        (", temperature: -1", "task.temperature: Input should be greater than or equal to 0"),
    ],
)
def test_repeats_need_sampling(tmp_path, tiny_model, extra, message):
    from evalkit.errors import SuiteError

    with pytest.raises(SuiteError) as info:
        _suite(tmp_path, tiny_model, extra)
    assert message in str(info.value)

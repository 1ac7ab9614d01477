"""The cost model: prices from pyproject.toml, each candidate's cost per 1,000 requests, the frontier, and
the break-even of an adapter against a prompt, checked by hand from recorded tokens, times and prices."""

from __future__ import annotations

import math

import pytest

from evalkit.costs import (
    CostModel,
    break_even,
    break_even_text,
    candidate_cost,
    economics_lines,
    read_cost_model,
    suite_economics,
    with_frontier,
)
from evalkit.errors import EvalkitError
from evalkit.record import CandidateEntry


def entry(
    accuracy: float,
    ms: float,
    *,
    prompt: float = 100,
    output: float = 0,
    train_s: float | None = None,
    model: str = "smollm2-135m-instruct",
):
    """A candidate's entry in the run record, as much of it as pricing reads."""
    return CandidateEntry.model_validate(
        {
            "task": "classify",
            "n": 100,
            "failures": [],
            "model": model,
            "metrics": {"accuracy": accuracy},
            "ci95": {"accuracy": [accuracy - 0.05, accuracy + 0.05]},
            "cost": {"prompt_tokens_per_example": prompt, "output_tokens_per_example": output, "ms_per_example": ms},
            "adapter": None if train_s is None else {"name": "lora", "train_s": train_s},
        }
    )


def test_prices_come_from_pyproject_with_documented_defaults(tmp_path):
    assert read_cost_model(tmp_path / "missing.toml") == CostModel()
    assert CostModel().machine_hour == 0.10 and CostModel().training_price == 0.10
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[tool.evalkit.costs]\nmachine_hour = 0.5\ntraining_hour = 3.0\n\n"
        '[tool.evalkit.costs.models."hosted-model"]\nprompt_per_1k_tokens = 0.15\noutput_per_1k_tokens = 0.6\n'
    )
    prices = read_cost_model(pyproject)
    assert (prices.machine_hour, prices.training_price) == (0.5, 3.0)
    assert prices.models["hosted-model"].output_per_1k_tokens == 0.6


def test_a_bad_price_names_the_file_and_the_key(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.evalkit.costs]\nmachine_hour = -1\n")
    with pytest.raises(EvalkitError) as info:
        read_cost_model(pyproject)
    assert "pyproject.toml: [tool.evalkit.costs] machine_hour: Input should be greater than or equal to 0" in str(
        info.value
    )


def test_in_process_candidates_are_priced_by_model_time_and_hosted_ones_by_tokens():
    prices = CostModel.model_validate(
        {"machine_hour": 0.36, "models": {"hosted": {"prompt_per_1k_tokens": 0.5, "output_per_1k_tokens": 2.0}}}
    )
    local = candidate_cost(entry(0.8, ms=50), "local", prices)
    assert local.priced_by == "time"
    assert local.per_1k == pytest.approx(1000 * 0.050 / 3600 * 0.36)  # 1,000 requests of 50 ms at $0.36/h
    hosted_entry = entry(0.8, ms=50, prompt=120, output=10).model_copy(update={"model": "hosted"})
    hosted = candidate_cost(hosted_entry, "hosted", prices)
    assert hosted.priced_by == "tokens"
    assert hosted.per_1k == pytest.approx(1000 * (120 * 0.5 + 10 * 2.0) / 1000)


def test_break_even_by_hand():
    """An adapter at 36 ms per request against a prompt at 100 ms, at $0.10 an hour, after 60 s of training:
    each request saves 64 ms, or 0.1 * 0.064 / 3600 dollars, and the $0.001667 of training is paid back
    after ceil(60 / 0.064) = 938 requests."""
    prices = CostModel()
    adapter = candidate_cost(entry(0.85, ms=36, train_s=60), "lora", prices)
    prompt = candidate_cost(entry(0.59, ms=100), "few_shot", prices)
    pair = break_even(adapter, prompt)
    assert adapter.training == pytest.approx(60 / 3600 * 0.10)
    assert pair.requests == math.ceil(60 / 0.064) == 938
    assert pair.accuracy_gain == pytest.approx(0.26)
    assert break_even_text(pair, "USD") == (
        "lora is cheaper per request than few_shot and 0.260 more accurate: it pays back its 60 s of training "
        "($0.00167) after 938 requests"
    )


def test_a_tuned_small_model_against_a_prompted_large_one_on_its_own_machine():
    """The large model runs on a $2.50-an-hour machine at 400 ms a request ($0.000278 each); the tuned small
    one at 36 ms on the $0.10 default ($0.000001 each). Each request saves $0.000277, so 60 s of training
    ($0.001667) is paid back after 7 requests."""
    prices = CostModel.model_validate({"models": {"qwen-7b": {"machine_hour": 2.5}}})
    small = candidate_cost(entry(0.85, ms=36, train_s=60), "lora", prices)
    large = candidate_cost(entry(0.80, ms=400, model="qwen-7b"), "big_prompt", prices)
    assert large.priced_by == "time" and large.per_1k == pytest.approx(1000 * 0.4 / 3600 * 2.5)
    assert small.per_1k == pytest.approx(1000 * 0.036 / 3600 * 0.1)
    pair = break_even(small, large)
    saving = (0.4 * 2.5 - 0.036 * 0.1) / 3600
    assert pair.requests == math.ceil((60 / 3600 * 0.1) / saving) == 7
    assert break_even_text(pair, "USD") == (
        "lora (on smollm2-135m-instruct) is cheaper per request than big_prompt (on qwen-7b) and 0.050 more "
        "accurate: it pays back its 60 s of training ($0.00167) after 7 requests"
    )
    assert [c.candidate for c in with_frontier([small, large]) if c.pareto] == ["lora"]


def test_an_adapter_that_costs_more_per_request_never_pays_back():
    prices = CostModel()
    pair = break_even(
        candidate_cost(entry(0.85, ms=72, train_s=60), "lora", prices), candidate_cost(entry(0.59, ms=36), "p", prices)
    )
    assert pair.requests is None
    assert break_even_text(pair, "USD") == (
        "lora never pays back its 60 s of training ($0.00167) against p: its requests cost $0.001 more per 1,000; "
        "it is 0.260 more accurate"
    )


def test_the_frontier_marks_the_candidates_nothing_beats():
    prices = CostModel()
    costs = with_frontier(
        [
            candidate_cost(entry(0.60, ms=10), "cheap", prices),
            candidate_cost(entry(0.90, ms=50), "accurate", prices),
            candidate_cost(entry(0.55, ms=30), "dominated", prices),  # cheap is both cheaper and more accurate
            candidate_cost(entry(0.90, ms=60), "same-but-dearer", prices),
        ]
    )
    assert {c.candidate: c.pareto for c in costs} == {
        "cheap": True,
        "accurate": True,
        "dominated": False,
        "same-but-dearer": False,
    }


def test_a_suites_economics_in_words():
    suite = suite_economics({"few_shot": entry(0.59, ms=100), "lora": entry(0.85, ms=36, train_s=60)}, CostModel())
    assert [pair.against for pair in suite.break_even] == ["few_shot"]
    assert economics_lines(suite, "USD")[0] == (
        "accuracy and cost per 1,000 requests (* on the accuracy-cost frontier): lora 0.850 at $0.001 + $0.00167 "
        "once *, few_shot 0.590 at $0.00278"
    )


def test_the_run_record_and_summary_md_carry_the_costs():
    from evalkit.report.markdown import render_summary
    from evalkit.results import build_record, example_rows

    from .reports_helpers import HEADER, candidate_result

    results = [candidate_result([True, False, True, True], candidate=name) for name in ("few_shot", "zero_shot")]
    for result, seconds in zip(results, (0.4, 0.2)):
        result.compute_s = seconds  # 100 and 50 ms per example
    record = build_record({**HEADER, "run_id": "r1"}, results, CostModel(machine_hour=3.6))
    priced = record.costs.suites["tickets"].candidates
    assert priced["few_shot"].per_1k_requests == pytest.approx(0.1)  # 1,000 x 100 ms at $3.60 an hour
    assert (priced["few_shot"].pareto_optimal, priced["zero_shot"].pareto_optimal) == (False, True)
    summary = render_summary(record, example_rows(results))
    assert (
        "- accuracy and cost per 1,000 requests (\\* on the accuracy-cost frontier): zero\\_shot 0.750 at $0.05 \\*"
        in summary
    )

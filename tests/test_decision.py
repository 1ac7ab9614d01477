"""Prompt or fine-tune on equal footing: the best prompt against the best adapter with a paired test on the
same rows, a searched prompt's optimism gap, and a search's time as a one-time cost in the break-even."""

from __future__ import annotations

import json
import re

import pytest

from evalkit.costs import CostModel, break_even, break_even_text, candidate_cost
from evalkit.decision import best_hand_written, decision_line, search_line
from evalkit.record import CandidateEntry, PromptSearchInfo, RunRecord, schema_problem
from evalkit.results import decisions
from evalkit.stats import mcnemar_exact
from tests.reports_helpers import candidate_result, write_record

ADAPTER = {"name": "lora", "content_hash": "a" * 64, "train_s": 40.0, "trainable_parameters": 1, "adapter_bytes": 1}


def _search(test: float = 0.7) -> dict:
    return {
        "artifact": "prompts/.search/tickets/tuned.json",
        "objective": "dev_accuracy",
        "settings": {"fewshot.k": 4},
        "best_trial": 2,
        "dev_accuracy": 0.8,
        "dev_ci95": [0.7, 0.88],
        "dev_n": 100,
        "trials": 4,
        "pruned": 1,
        "trial_scores": [0.6, 0.7, 0.8, 0.5],
        "search_s": 300.0,
        "searched_now": False,
        "optimism": {
            "dev": 0.8,
            "dev_ci95": [0.7, 0.88],
            "test": test,
            "test_ci95": [0.62, 0.77],
            "gap": round(0.8 - test, 6),
            "gap_ci95": [-0.01, 0.21],
        },
    }


def _suite():
    few_shot = candidate_result([i % 2 == 0 for i in range(40)], candidate="few_shot")  # 0.50
    tuned = candidate_result([i % 4 != 3 for i in range(40)], candidate="tuned")  # 0.75
    tuned.prompt_search = _search(0.75)
    lora = candidate_result([i % 8 != 7 for i in range(40)], candidate="lora")  # 0.875
    lora.adapter = dict(ADAPTER)
    return [few_shot, tuned, lora]


def test_the_best_prompt_and_the_best_adapter_are_paired_on_the_same_rows():
    (found,) = decisions(_suite()).values()
    assert found.best_prompt.candidate == "tuned" and found.best_adapter.candidate == "lora"
    # tuned misses i % 4 == 3 (10 rows), lora misses i % 8 == 7 (5 rows, all among tuned's misses)
    assert (found.shared, found.adapter_only_right, found.prompt_only_right) == (40, 5, 0)
    assert found.p_value == pytest.approx(mcnemar_exact(0, 5)) == pytest.approx(0.0625)
    assert found.best_prompt.search_s == 300.0 and found.best_adapter.train_s == 40.0
    assert decision_line(found) == (
        "best prompt vs best adapter: tuned 0.750 [0.60, 0.86] (300 s of prompt search) against lora 0.875 "
        "[0.74, 0.95] (40 s of training), on 40 shared rows: lora alone right on 5, tuned alone on 0; "
        "exact McNemar p = 0.062"
    )


def test_a_suite_without_an_adapter_or_without_a_prompt_has_no_decision():
    prompts = [r for r in _suite() if r.adapter is None]
    assert decisions(prompts) == {}
    assert decisions([r for r in _suite() if r.adapter is not None]) == {}


def test_a_searched_prompt_says_what_its_dev_score_promised_and_what_the_golden_set_read():
    assert search_line("tuned", PromptSearchInfo.model_validate(_search(0.7))) == (
        "prompt search of tuned: best of 4 trials (1 pruned) scored 0.800 [0.70, 0.88] on 100 dev rows, "
        "0.700 [0.62, 0.77] on the golden set: optimism gap +0.100 [-0.01, +0.21]; 300 s of search, once"
    )


def test_a_prompt_search_is_a_one_time_cost_in_the_break_even():
    prices = CostModel(machine_hour=3.6)  # $0.001 a second
    prompt = {
        **{"task": "classify", "n": 10, "failures": []},
        **{"metrics": {"accuracy": 0.7}, "ci95": {"accuracy": [0.6, 0.8]}, "cost": {"ms_per_example": 200.0}},
    }
    adapter = {**prompt, "metrics": {"accuracy": 0.8}, "cost": {"ms_per_example": 100.0}, "adapter": ADAPTER}
    searched = {**prompt, "prompt_search": {**_search(), "search_s": 30.0}}  # $0.03 of search on the prompt's side
    adapter_entry, prompt_entry, searched_entry = (
        CandidateEntry.model_validate(e) for e in (adapter, prompt, searched)
    )
    plain = break_even(candidate_cost(adapter_entry, "lora", prices), candidate_cost(prompt_entry, "few_shot", prices))
    assert plain.requests == 400  # $0.04 of training at $0.0001 saved per request
    pair = break_even(candidate_cost(adapter_entry, "lora", prices), candidate_cost(searched_entry, "tuned", prices))
    assert pair.requests == 100 and pair.one_time == pytest.approx(0.01)
    assert break_even_text(pair, "USD") == (
        "lora is cheaper per request than tuned (whose prompt search took 30 s) and 0.100 more accurate: it pays "
        "back its 40 s of training ($0.01 net of the prompt's search) after 100 requests"
    )


def test_every_report_shows_the_decision_and_the_search(tmp_path):
    folder = write_record(tmp_path / "reports", "20261121T100000Z", _suite(), CostModel(machine_hour=3.6))
    record = json.loads((folder / "results.json").read_text())
    assert schema_problem(RunRecord, record) is None  # the typed record's schema reads what was written
    assert record["decisions"]["tickets"]["adapter_only_right"] == 5
    assert record["suites"]["tickets"]["tuned"]["prompt_search"]["optimism"]["test"] == 0.75
    assert record["suites"]["tickets"]["tuned"]["cost"]["search_s"] == 300.0
    summary = (folder / "summary.md").read_text()
    assert "### Prompt or fine-tune" in summary and "exact McNemar p = 0.062" in summary
    html = (folder / "report.html").read_text()
    assert "<h3>Prompt or fine-tune</h3>" in html
    assert len(re.findall(r'<circle class="trial-point', html)) == 4
    assert len(re.findall(r'<circle class="trial-point best"', html)) == 1
    assert 'class="test-read"' in html and "golden set 0.750" in html


def test_a_search_says_what_it_bought_over_the_best_hand_written_prompt():
    search = PromptSearchInfo.model_validate(_search(0.7))
    assert search_line("tuned", search, ("few_shot", 0.594, (0.52, 0.67))).endswith(
        "; 300 s of search, once; +0.106 over the best hand-written prompt, few_shot, reads 0.594 [0.52, 0.67]"
    )
    assert search_line("tuned", search, ("few_shot", 0.887, (0.83, 0.93))).endswith(
        "; the search bought nothing on this suite: the best hand-written prompt, few_shot, reads 0.887 [0.83, 0.93]"
    )
    few_shot, tuned, lora = _suite()  # tuned was searched and lora fine-tuned: few_shot is the hand-written one
    entries = [(r.candidate, r.entry()) for r in (few_shot, tuned, lora)]
    assert best_hand_written(entries) == ("few_shot", 0.5, few_shot.ci95["accuracy"])

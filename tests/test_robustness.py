"""Robustness search: perturbations keep their promises, shrinking finds the minimal change, seeds repeat."""

from __future__ import annotations

import json
import string
import textwrap

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from evalkit import robustness
from evalkit.errors import SuiteError
from evalkit.robustness import DISTRACTORS, apply_typo, perturbations, register_perturbation, search
from evalkit.runner import Resources, evaluate_candidate
from evalkit.suite import load_suite
from evalkit.testing import ScriptedBackend
from tests.conftest import write_jsonl

TEXT = "the quick brown fox jumps"


def contains_capital_x(batch):
    """A fake model whose answer is 'yes' exactly when the text holds a capital X."""
    return ["yes" if "X" in fields["text"] else "no" for _, fields, _ in batch]


def _without_timing(report) -> dict:
    data = report.as_dict()
    data.pop("wall_s")
    return data


def test_shrinking_reports_exactly_the_one_letter_that_flips_the_answer():
    report = search(
        [("r1", {"text": TEXT}, None, "no"), ("r2", {"text": "nothing to see"}, None, "no")],
        ["case"],
        contains_capital_x,
        tries=100,
        seed=0,
    )
    assert report.invariance == 0.5
    [flip] = report.as_dict()["flipped"]
    assert flip["perturbed"] == {"text": "the quick brown foX jumps"}  # one letter, not the several first drawn
    assert flip["change"] == "case of 1 letter(s) in text: 'x'->'X' at 18"
    assert (flip["before"], flip["after"]) == ("no", "yes")


def test_a_fixed_seed_gives_identical_results_twice():
    rows = [(f"r{i}", {"text": f"{TEXT} number {i}"}, None, "no") for i in range(6)]
    names = ["case", "whitespace", "typos", "punctuation", "distractor"]
    first = search(rows, names, contains_capital_x, tries=30, seed=3)
    again = search(rows, names, contains_capital_x, tries=30, seed=3)
    assert _without_timing(first) == _without_timing(again)
    seen: list[list[str]] = [[], []]
    for k, seed in enumerate((3, 4)):

        def record(batch, k=k):
            seen[k].extend(fields["text"] for _, fields, _ in batch)
            return contains_capital_x(batch)

        search(rows, names, record, tries=30, seed=seed)
    assert seen[0] != seen[1]  # another seed tries other perturbations


def test_tries_are_scored_in_one_batch_and_shrinking_calls_one_at_a_time():
    batches: list[int] = []

    def counting(batch):
        batches.append(len(batch))
        return contains_capital_x(batch)

    report = search(
        [("r1", {"text": TEXT}, None, "no"), ("r2", {"text": "nothing to see"}, None, "no")],
        ["case"],
        counting,
        tries=100,
        seed=0,
        shrink_calls=5,
    )
    assert batches[0] > 100 and all(size == 1 for size in batches[1:])
    assert len(batches) - 1 <= 5  # the shrink budget
    assert report.calls == sum(batches)


def test_rows_shrink_concurrently_with_their_model_calls_pooled():
    batches: list[int] = []

    def counting(batch):
        batches.append(len(batch))
        return contains_capital_x(batch)

    rows = [(f"r{i}", {"text": f"fox number {i} jumps"}, None, "no") for i in range(8)]
    report = search(rows, ["case"], counting, tries=60, seed=0)
    flipped = report.as_dict()["flipped"]
    assert len(flipped) >= 4
    assert all(f["change"] == "case of 1 letter(s) in text: 'x'->'X' at 2" for f in flipped)
    assert max(batches[1:]) > 1  # shrink steps of different rows went to the model together
    assert report.as_dict()["shrink_batches"] == len(batches) - 1


def test_choice_order_keeps_the_label_and_reports_the_order():
    def first_choice(batch):
        return [choices[0] for _, _, choices in batch]

    report = search([("r1", {"text": TEXT}, ["a", "b", "c"], "a")], ["choice_order"], first_choice, tries=10, seed=0)
    [flip] = report.as_dict()["flipped"]
    assert sorted(flip["perturbed_choices"]) == ["a", "b", "c"] and flip["after"] == flip["perturbed_choices"][0]
    assert flip["perturbed_choices"] == ["b", "a", "c"]  # shrunk to one swap of the first two


# --------------------------------------------------------------------------- each perturbation's promise

texts = st.text(alphabet=string.ascii_letters + string.digits + " .,!?'-éß", min_size=1, max_size=40)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _draw(data, name: str, text: str, choices=None):
    strategy = perturbations()[name].factory({"text": text}, choices)
    assume(not strategy.is_empty)
    return data.draw(strategy)


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


@FAST
@given(text=texts, data=st.data())
def test_case_changes_only_the_case_of_letters(text, data):
    new = dict(_draw(data, "case", text).fields)["text"]
    assert len(new) == len(text) and new != text
    assert [a.casefold() for a in new] == [b.casefold() for b in text]


@FAST
@given(text=texts, data=st.data())
def test_whitespace_leaves_the_text_without_whitespace_unchanged(text, data):
    new = dict(_draw(data, "whitespace", text).fields)["text"]
    assert "".join(new.split()) == "".join(text.split()) and new != text


@FAST
@given(text=texts, data=st.data())
def test_typos_change_at_most_two_characters_each(text, data):
    change = _draw(data, "typos", text)
    new = dict(change.fields)["text"]
    edits = change.description.count(" at ")
    assert 1 <= edits <= 3
    assert _levenshtein(text, new) <= 2 * edits
    assert [c for c in new if not c.isalpha()] == [c for c in text if not c.isalpha()]


@FAST
@given(text=texts, data=st.data())
def test_punctuation_leaves_letters_digits_and_spaces(text, data):
    new = dict(_draw(data, "punctuation", text).fields)["text"]
    kept = set(string.punctuation)
    assert [c for c in new if c not in kept] == [c for c in text if c not in kept]


@FAST
@given(text=texts, data=st.data())
def test_distractor_keeps_the_text_whole(text, data):
    new = dict(_draw(data, "distractor", text).fields)["text"]
    assert any(new in (f"{text} {sentence}", f"{sentence} {text}") for sentence in DISTRACTORS)


@FAST
@given(choices=st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=6, unique=True), data=st.data())
def test_choice_order_never_changes_the_set_of_choices(choices, data):
    change = _draw(data, "choice_order", "x", choices)
    assert sorted(change.choices) == sorted(choices) and list(change.choices) != choices and change.fields == ()


def test_apply_typo_operations():
    assert apply_typo("quick", 1, "swap") == "qiuck"
    assert apply_typo("quick", 1, "delete") == "qick"
    assert apply_typo("quick", 1, "double") == "quuick"
    assert apply_typo("quick", 1, "neighbour") == "qyick"


# --------------------------------------------------------------------------- registration and suites


def test_custom_perturbations_by_decorator_and_entry_point(monkeypatch):
    from evalkit import registry

    monkeypatch.setattr(robustness.perturb, "PERTURBATIONS", robustness.perturb.PERTURBATIONS.copy())

    @register_perturbation("shout", promise="upper-cases the whole text")
    def shout(fields, choices):
        return st.just(robustness.Change("shout", (("text", fields["text"].upper()),), None, "upper-cased"))

    class EntryPoint:
        name = "reverse"
        value = "tests:reverse"

        @staticmethod
        def load():
            def reverse(fields, choices):
                return st.just(robustness.Change("reverse", (("text", fields["text"][::-1]),), None, "reversed"))

            return reverse

    monkeypatch.setattr(
        registry, "entry_points", lambda group: [EntryPoint] if group == "evalkit.perturbations" else []
    )
    try:
        known = perturbations()
        assert known["shout"].promise == "upper-cases the whole text"
        report = search(
            [("r1", {"text": "fox"}, None, "fox")],
            ["shout", "reverse"],
            lambda batch: [f["text"] for _, f, _ in batch],
            tries=5,
            seed=0,
        )
        assert report.as_dict()["flipped"][0]["change"] == "upper-cased"  # shrinks to the first listed
        assert "reverse" in known
    finally:
        robustness.perturb.PERTURBATIONS.remove("shout")
        robustness.perturb.PERTURBATIONS.remove("reverse")


def BangBackend() -> ScriptedBackend:
    """Answers 'no' unless the prompt holds '!': a model that an exclamation mark flips."""
    return ScriptedBackend(lambda asked: "yes" if "!" in asked.prompt else "no", miss=-2.0)


def _suite(tmp_path, robustness_yaml: str, thresholds: str = "") -> object:
    rows = [{"id": f"q{i}", "text": f"is item {i} in stock", "label": "no"} for i in range(8)]
    write_jsonl(tmp_path / "data.jsonl", rows)
    path = tmp_path / "stock.eval.yaml"
    path.write_text(
        textwrap.dedent("""\
        suite: stock
        dataset: {path: data.jsonl}
        task: {kind: classify, choices: ["yes", "no"], target: label}
        candidates:
          plain: {template: "Q: {{ text }}\\nA:"}
        """)
        + robustness_yaml
        + thresholds
    )
    return load_suite(path)


def test_a_suite_reports_invariance_and_the_minimal_flip(tmp_path):
    spec = _suite(
        tmp_path,
        "robustness: {perturbations: [punctuation], examples: 5, tries: 20, seed: 0}\n",
        'thresholds:\n  invariance: ">= 0.5"\n',
    )
    backend = BangBackend()
    result = evaluate_candidate(spec, "plain", Resources(backend=lambda *_: backend))
    assert result.metrics["accuracy"] == 1.0
    r = result.robustness.as_json()
    assert r["examples"] == 5 and r["tries"] == 20
    assert result.metrics["invariance"] == r["held"] / 5 < 1
    assert result.ci95["invariance"][0] <= result.metrics["invariance"] <= result.ci95["invariance"][1]
    for flip in r["flipped"]:
        assert flip["change"].startswith("punctuation in text: add ! at ")  # one mark, the one that matters
        assert flip["perturbed"]["text"].count("!") == 1 and (flip["before"], flip["after"]) == ("no", "yes")
    assert sorted(e.details["invariance"] for e in result.examples if "invariance" in e.details) == sorted(
        [0.0] * (5 - r["held"]) + [1.0] * r["held"]
    )
    assert result.passed == (result.metrics["invariance"] >= 0.5)


@pytest.mark.parametrize(
    ("robust", "thresholds", "message"),
    [
        ("robustness: {perturbations: [typo]}\n", "", "unknown perturbation 'typo' (did you mean 'typos'?)"),
        ("", 'thresholds:\n  invariance: ">= 0.9"\n', "metric 'invariance' needs a `robustness:` section"),
        ("robustness: {perturbations: []}\n", "", "robustness.perturbations: List should have at least 1 item"),
        (
            "robustness: {perturbations: [case], tries: 0}\n",
            "",
            "robustness.tries: Input should be greater than or equal to 1",
        ),
    ],
)
def test_robustness_mistakes_are_suite_errors(tmp_path, robust, thresholds, message):
    with pytest.raises(SuiteError) as info:
        _suite(tmp_path, robust, thresholds)
    assert message in str(info.value)
    assert "stock.eval.yaml:" in str(info.value)


def test_choice_order_needs_a_classify_task(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", [{"id": "a", "q": "2+3", "a": "5"}])
    path = tmp_path / "qa.eval.yaml"
    path.write_text(
        "suite: qa\ndataset: {path: qa.jsonl}\ntask: {kind: generate, target: a}\n"
        'candidates:\n  plain: {template: "{{ q }}"}\nrobustness: {perturbations: [choice_order]}\n'
    )
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert "perturbation 'choice_order' reorders a classify task's choices; this is a generate task" in str(info.value)
    assert info.value.line == 6


def test_robustness_can_cover_some_candidates(tmp_path):
    spec = _suite(
        tmp_path,
        "robustness: {perturbations: [punctuation], examples: 3, tries: 5, candidates: [plain]}\n",
        'thresholds:\n  invariance: ">= 0.1"\n',
    )
    assert spec.robustness_for("plain") is not None
    text = (
        (tmp_path / "stock.eval.yaml")
        .read_text()
        .replace(
            '  plain: {template: "Q: {{ text }}\\nA:"}\n',
            '  plain: {template: "Q: {{ text }}\\nA:"}\n  other: {template: "{{ text }}"}\n',
        )
    )
    (tmp_path / "stock.eval.yaml").write_text(text)
    spec = load_suite(tmp_path / "stock.eval.yaml")
    assert spec.robustness_for("other") is None
    assert "invariance" in spec.thresholds_for("plain") and "invariance" not in spec.thresholds_for("other")
    result = evaluate_candidate(spec, "other", Resources(backend=lambda *_: BangBackend()))
    assert "invariance" not in result.metrics and result.robustness is None and result.passed
    (tmp_path / "stock.eval.yaml").write_text(text.replace("candidates: [plain]", "candidates: [plane]"))
    with pytest.raises(SuiteError) as info:
        load_suite(tmp_path / "stock.eval.yaml")
    assert "robustness names candidate 'plane', which the suite does not define (did you mean 'plain'?)" in str(
        info.value
    )


def test_robustness_through_pytest_shows_in_table_record_and_reports(pytester, tiny_model):
    import json

    from tests.conftest import TICKET_ROWS

    write_jsonl(pytester.path / "data.jsonl", TICKET_ROWS)
    pytester.makeini("[pytest]\nfilterwarnings =\n    ignore::pytest.PytestAssertRewriteWarning\n")
    (pytester.path / "t.eval.yaml").write_text(
        textwrap.dedent(f"""\
        suite: tickets
        model: {tiny_model}
        dataset: {{path: data.jsonl}}
        task: {{kind: classify, choices: [billing, technical, account, shipping, other], target: label}}
        candidates:
          plain: {{template: "Ticket: {{{{ text }}}}\\nCategory:"}}
          listed: {{template: "One of {{{{ choices | join(', ') }}}}. Ticket: {{{{ text }}}}\\nCategory:"}}
        robustness: {{perturbations: [case, typos, choice_order], examples: 4, tries: 6}}
        thresholds: {{invariance: ">= 0"}}
        """)
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "candidate*accuracy*invariance*",
            "robustness (invariance: *): listed * of 4 rows held, 6 tries each, *s; plain *",
        ]
    )
    record = json.loads((pytester.path / "reports/latest/results.json").read_text())
    for entry in record["suites"]["tickets"].values():
        r = entry["robustness"]
        assert r["examples"] == 4 and entry["metrics"]["invariance"] == r["held"] / 4
        assert r["model_calls"] >= 4
    summary = (pytester.path / "reports/latest/summary.md").read_text()
    assert "### Robustness" in summary and "| tickets · plain  | 1.000 [0.51, 1.00]    | 4 of 4" in summary


SEARCH_IN_A_PROCESS = """
import hashlib, json
from evalkit.robustness import search
rows = [(f"r{i}", {"text": f"my order {i} never arrived, so refund parcel {i * 7}!"}, ["a", "b"], "a") for i in range(12)]
asked = []
def predict(batch):
    asked.extend(fields["text"] for _, fields, _ in batch)
    return ["a" if int(hashlib.sha256(f["text"].encode()).hexdigest(), 16) % 3 else "b" for _, f, _ in batch]
report = search(rows, ["case", "whitespace", "typos", "punctuation", "distractor"], predict, tries=8, seed=0)
print(json.dumps([sorted(asked), [r.flip and r.flip.change for r in report.rows]]))
"""


def test_search_is_identical_in_processes_with_different_hash_seeds():
    """A cached search outcome is reused by later runs, so the search must not depend on set order."""
    import os
    import subprocess
    import sys

    outputs = {
        subprocess.run(
            [sys.executable, "-c", SEARCH_IN_A_PROCESS],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
    asked, flips = json.loads(outputs.pop())
    assert len(asked) > 12 * 8 and any(flips)


def test_a_cached_search_gives_the_same_outcome_and_costs_no_time(tmp_path):
    from evalkit.cache import ResultCache

    spec = _suite(tmp_path, "robustness: {perturbations: [punctuation], examples: 5, tries: 20, seed: 0}\n")
    cache = ResultCache(tmp_path / "cache")
    backend = BangBackend()

    def run():
        return evaluate_candidate(spec, "plain", Resources(backend=lambda *_: backend, cache=cache))

    first = run()
    calls = backend.calls
    again = run()
    assert backend.calls == calls  # neither the rows nor the search reached the model
    assert first.robustness.cached is False and again.robustness.cached is True
    assert {k: v for k, v in again.robustness.as_json().items() if k != "cached"} == {
        k: v for k, v in first.robustness.as_json().items() if k != "cached"
    }
    assert again.metrics == first.metrics
    assert again.wall_s >= 0  # the cached search is not subtracted from this run's time

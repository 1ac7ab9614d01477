"""One suite, several models: a candidate's own `model:`, the `models:` matrix (candidate@model runs), the
`compare:` checks between runs, the paired table, and the errors a suite gets for them at file:line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from evalkit.errors import SuiteError
from evalkit.suite import load_suite
from tests.conftest import write_jsonl
from tests.test_backends import ROWS, _calls, fake_project  # noqa: F401  (a fixture)

MANY_ROWS = [{**row, "id": f"{row['id']}-{k}"} for k in range(10) for row in ROWS]  # 60 rows

MATRIX = """\
    suite: keywords
    model: {backend: fake, name: v1, miss: -1.0}
    models:
      v2: {backend: fake, name: v2, miss: -2.0}
    dataset: {path: data/rows.jsonl}
    task: {kind: classify, choices: [billing, shipping, other], target: label}
    candidates:
      plain: {template: "Ticket: {{ text }}\\nCategory:"}
      blind: {template: "Which team?"}
      solo: {template: "{{ text }}", model: {backend: fake, name: v2, miss: -2.0}}   # the same model as v2
    compare:
      - {candidate: plain@v2, reference: plain, max_drop: 0.1, min_agreement: 0.95}
      - {candidate: blind, reference: plain, max_drop: 0.1}
    thresholds: {accuracy: ">= 0.0"}
    """


@pytest.fixture
def matrix_project(pytester: pytest.Pytester, fake_project: Path) -> Path:  # noqa: F811
    write_jsonl(pytester.path / "suites" / "data" / "rows.jsonl", MANY_ROWS)
    (pytester.path / "suites" / "keywords.eval.yaml").write_text(textwrap.dedent(MATRIX))
    return fake_project


def test_a_matrix_runs_every_candidate_on_every_model_loads_each_once_and_a_warm_run_asks_nothing(
    pytester, matrix_project
):
    first = pytester.runpytest_subprocess("suites", "-p", "no:cacheprovider", "-v", "--evalkit-update-baseline")
    first.assert_outcomes(passed=4, failed=1)
    first.stdout.fnmatch_lines(
        [
            "*keywords.eval.yaml::plain PASSED*",
            "*keywords.eval.yaml::plain@v2 PASSED*",
            "*keywords.eval.yaml::blind FAILED*",
            "*keywords.eval.yaml::blind@v2 PASSED*",
        ]
    )
    # v1 once, v2 once: the matrix's runs on v2 and solo's own model block share one backend
    assert [line for line in _calls(matrix_project) if line.startswith("load")] == ["load 0", "load 0"]
    record = json.loads((pytester.path / "reports/latest/results.json").read_text())
    runs = record["suites"]["keywords"]
    assert {name: runs[name]["model_fingerprint"] for name in runs} == {
        "plain": "keyword-model-v1:none",
        "blind": "keyword-model-v1:none",
        "plain@v2": "keyword-model-v2:none",
        "blind@v2": "keyword-model-v2:none",
        "solo": "keyword-model-v2:none",
    }
    assert runs["plain@v2"]["model"] == "v2"

    # plain@v2 answers as plain on all 60 rows: no row differs, so the exact bound decides: p = 0.9 ** 60
    (check,) = runs["plain@v2"]["compared"]
    assert check["passed"] and check["shared"] == 60 and check["difference"] == 0.0
    assert check["p_value"] == pytest.approx(0.9**60)
    assert check["agree"] == 60 and check["agreement"] == 1.0 and check["kappa"] == 1.0

    # blind picks the first choice on every row: right on the 20 billing rows, plain on 40 of 60
    (check,) = runs["blind"]["compared"]
    assert not check["passed"] and check["difference"] == pytest.approx(20 / 60 - 40 / 60)
    assert check["disagreeing"][0]["candidate"] == 0.0 and check["disagreeing"][0]["reference"] == 1.0
    first.stdout.fnmatch_lines(
        ["*blind is not shown non-inferior to plain on accuracy: difference -0.333 on 60 shared rows*"]
    )

    table = record["pairs"]["keywords"]
    assert (
        len(table["pairs"]) == 10
        and table["pairs"][0]["first"] == "blind"
        and table["pairs"][0]["second"] == "blind@v2"
    )
    summary = (pytester.path / "reports/latest/summary.md").read_text()
    assert "| blind vs plain " in summary and "Holm-adjusted over the 10 pairs" in summary

    matrix_project.write_text("")
    warm = pytester.runpytest_subprocess("suites", "-p", "no:cacheprovider")
    warm.assert_outcomes(passed=4, failed=1)
    assert _calls(matrix_project) == []  # no model loaded, no request sent
    baseline = json.loads((pytester.path / "reports/baseline.json").read_text())["suites"]["keywords"]["candidates"]
    assert sorted(baseline) == ["blind", "blind@v2", "plain", "plain@v2", "solo"]
    warm_runs = json.loads((pytester.path / "reports/latest/results.json").read_text())["suites"]["keywords"]
    assert warm_runs["plain@v2"]["baseline"]["status"] == "no significant change"
    warm.stdout.fnmatch_lines(
        ["result cache *: 20 of 20 requests answered from it (100%), 0 computed; the model was not loaded"]
    )


def test_k_selects_runs_by_candidate_and_model(pytester, matrix_project):
    result = pytester.runpytest_subprocess("suites", "-p", "no:cacheprovider", "-v", "-k", "plain and v2")
    result.assert_outcomes(passed=1, deselected=4)
    result.stdout.fnmatch_lines(["*keywords.eval.yaml::plain@v2 PASSED*"])


def _suite(tmp_path: Path, text: str) -> Path:
    write_jsonl(tmp_path / "data" / "rows.jsonl", ROWS)
    path = tmp_path / "s.eval.yaml"
    path.write_text(text)
    return path


SCRIPTED = textwrap.dedent(
    """\
    suite: s
    model: {backend: scripted, default: billing}
    models:
      other: {backend: scripted, default: shipping, candidates: [b], markers: [slow]}
      third: {backend: scripted, default: other}
    dataset: {path: data/rows.jsonl}
    task: {kind: classify, choices: [billing, shipping, other], target: label}
    candidates:
      a: {template: "{{ text }}"}
      b: {template: "{{ text }}!"}
      own: {template: "{{ text }}?", model: third}
    thresholds:
      accuracy: ">= 0.1"
      b: {accuracy: ">= 0.2"}
      b@other: {accuracy: ">= 0.3"}
    """
)


def test_runs_are_named_candidate_at_model_and_carry_their_model_markers_and_thresholds(tmp_path):
    spec = load_suite(_suite(tmp_path, SCRIPTED))
    assert list(spec.candidates) == ["a", "a@third", "b", "b@other", "b@third", "own"]
    assert spec.model_for("b@other").model_extra == {"default": "shipping"}
    assert spec.model_for("a").model_extra == {"default": "billing"}
    assert spec.model_for("own").model_extra == {"default": "other"}  # `model: third` names the matrix model
    assert spec.candidates["b@other"].all_markers == ("slow",)
    assert spec.candidates["b@other"].base_name == "b" and spec.candidates["b@other"].model_name == "other"
    assert {name: spec.thresholds_for(name)["accuracy"].text for name in spec.candidates} == {
        "a": ">= 0.1",
        "a@third": ">= 0.1",
        "b": ">= 0.2",
        "b@other": ">= 0.3",
        "b@third": ">= 0.2",
        "own": ">= 0.1",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "compare:\n  - {candidate: a@thrid, reference: a, max_drop: 0.02}\n",
            "s.eval.yaml:17: compare: candidate 'a@thrid' is not a run of this suite (did you mean 'a@third'?)",
        ),
        (
            "compare:\n  - {candidate: a, reference: b, max_drop: 0.02, metric: macro_f1}\n",
            "s.eval.yaml:17: compare: metric 'macro_f1' is not a mean over examples that a paired test can compare",
        ),
        (
            "compare:\n  - {candidate: a, reference: b}\n",
            "s.eval.yaml:17: compare.0: a check needs max_drop (non-inferiority), min_agreement or min_kappa",
        ),
    ],
)
def test_a_compare_mistake_is_named_at_its_line(tmp_path, change, message):
    with pytest.raises(SuiteError) as error:
        load_suite(_suite(tmp_path, SCRIPTED + change))
    assert str(error.value).splitlines()[0].endswith("/" + message)


def test_a_model_that_lists_an_unknown_candidate_is_named_with_its_line(tmp_path):
    text = SCRIPTED.replace("candidates: [b]", "candidates: [bb]")
    with pytest.raises(SuiteError) as error:
        load_suite(_suite(tmp_path, text))
    assert (
        str(error.value)
        .splitlines()[0]
        .endswith(
            "/s.eval.yaml:4: models.other runs candidate 'bb', which the suite does not define (did you mean 'b'?)"
        )
    )


def test_the_suites_own_model_in_models_is_refused(tmp_path):
    text = SCRIPTED.replace(
        "third: {backend: scripted, default: other}", "third: {backend: scripted, default: billing}"
    )
    with pytest.raises(SuiteError) as error:
        load_suite(_suite(tmp_path, text))
    assert (
        str(error.value)
        .splitlines()[0]
        .endswith(
            "/s.eval.yaml:5: models.third is the suite's own `model:`; every candidate already runs on it under its own name"
        )
    )


def test_a_latency_threshold_on_an_in_process_run_is_refused_at_its_line(tmp_path):
    text = SCRIPTED.replace('b@other: {accuracy: ">= 0.3"}', 'b@other: {accuracy: ">= 0.3", latency_p95_s: "<= 2"}')
    with pytest.raises(SuiteError) as error:
        load_suite(_suite(tmp_path, text))
    assert (
        str(error.value)
        .splitlines()[0]
        .endswith(
            "/s.eval.yaml:15: threshold on latency_p95_s for 'b@other', which runs in process (backend: scripted); "
            "latency and throughput are measured on the requests a served model answers"
        )
    )


def test_a_shared_latency_threshold_applies_to_served_runs_only(tmp_path):
    text = SCRIPTED.replace(
        "third: {backend: scripted, default: other}",
        "third: {backend: openai, name: m, base_url: 'http://127.0.0.1:9/v1'}",
    ).replace('accuracy: ">= 0.1"', 'accuracy: ">= 0.1"\n  latency_p95_s: "<= 2.5"')
    spec = load_suite(_suite(tmp_path, text))
    assert "latency_p95_s" in spec.thresholds_for("a@third") and "latency_p95_s" not in spec.thresholds_for("a")

"""Baselines through pytest: update, gate on a regression, refuse a partial update, report files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import write_jsonl

TEXTS = [
    "I was charged twice",
    "The app crashes on start",
    "I forgot my password",
    "My parcel never arrived",
    "Are you hiring?",
    "Refund my last invoice",
]
LABELS = ["billing", "technical", "account", "shipping", "other"]

SUITE = """\
suite: gate
model: {model}
dataset: {{path: data/gate.jsonl}}
task: {{kind: classify, choices: [billing, technical, account, shipping, other], target: label}}
candidates:
  plain:
    template: "Ticket: {{{{ text }}}}\\nCategory:"
  terse:
    template: "{{{{ text }}}} ->"
"""


def _rows(labels: list[str]) -> list[dict]:
    return [
        {"id": f"g-{i:02d}", "text": f"{TEXTS[i % len(TEXTS)]} (case {i})", "label": label}
        for i, label in enumerate(labels)
    ]


@pytest.fixture
def gated(pytester: pytest.Pytester, tiny_model):
    """A 30-row suite whose gold labels are the tiny model's own predictions for `plain` (accuracy 1.0)."""
    write_jsonl(pytester.path / "data" / "gate.jsonl", _rows([LABELS[0]] * 30))
    pytester.makeini("[pytest]\nfilterwarnings =\n    ignore::pytest.PytestAssertRewriteWarning\n")
    (pytester.path / "gate.eval.yaml").write_text(SUITE.format(model=tiny_model))
    pytester.runpytest().assert_outcomes(passed=2)
    predictions = [
        e["output"]
        for e in map(json.loads, (pytester.path / "reports/latest/examples.jsonl").read_text().splitlines())
        if e["candidate"] == "plain"
    ]
    pytester.predictions = predictions
    write_jsonl(pytester.path / "data" / "gate.jsonl", _rows(predictions))
    return pytester


def _baseline(pytester) -> dict:
    return json.loads((pytester.path / "reports" / "baseline.json").read_text())


def test_update_then_a_regression_fails_and_names_the_flips(gated):
    first = gated.runpytest("--evalkit-update-baseline")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["baseline written: *reports/baseline.json"])
    baseline = _baseline(gated)
    assert baseline["suites"]["gate"]["suite_path"] == "gate.eval.yaml"
    assert baseline["suites"]["gate"]["candidates"]["plain"]["metrics"]["accuracy"] == 1.0
    assert len(baseline["suites"]["gate"]["candidates"]["plain"]["examples"]) == 30

    same = gated.runpytest()
    same.assert_outcomes(passed=2)
    same.stdout.fnmatch_lines(["compared with the baseline *baseline.json"])

    # Relabel 10 rows: `plain` now gets them wrong, a drop of 0.333 with 10 flips one way (p = 2/1024).
    labels = list(gated.predictions)
    for i in range(10):
        labels[i] = next(label for label in LABELS if label != labels[i])
    write_jsonl(gated.path / "data" / "gate.jsonl", _rows(labels))
    worse = gated.runpytest("--junitxml=out.xml")
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    out = worse.stdout.str()
    assert "gate::plain failed (30 examples):" in out
    assert (
        "regression against the baseline: accuracy dropped 0.333 (more than max_drop 0) and McNemar p = 0.002 "
        "< alpha 0.05: 1.000 -> 0.667 on 30 shared examples"
    ) in out
    assert "  since the baseline: dataset changed (" in out
    worse.stdout.fnmatch_lines(
        [
            "*first examples that got worse (10 in all*",
            f"*g-00: '{gated.predictions[0]}' -> '{gated.predictions[0]}' (right -> wrong), expected '{labels[0]}'",
        ]
    )
    summary = (gated.path / "reports" / "latest" / "summary.md").read_text()
    assert "| plain       | accuracy | 0.667 [0.49, 0.81] | 1.000      | -0.333" in summary
    assert "❌ FAIL (regressed)" in summary and "- `plain`: dataset changed" in summary
    assert "**gate · plain**: 10 got worse, 0 got better (first 5 shown)" in summary
    case = next(c for c in ET.parse(gated.path / "out.xml").iter("testcase") if c.get("name") == "plain")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["evalkit.baseline.status"] == "regressed"
    assert float(props["evalkit.baseline.accuracy.delta"]) == pytest.approx(-1 / 3, abs=1e-6)
    assert props["evalkit.verdict"] == "fail"
    assert props["evalkit.baseline.worse"] == "10"

    # Accepting the change: the update run passes, and the next run compares with the new baseline.
    gated.runpytest("--evalkit-update-baseline").assert_outcomes(passed=2)
    assert _baseline(gated)["suites"]["gate"]["candidates"]["plain"]["metrics"]["accuracy"] == pytest.approx(2 / 3)
    gated.runpytest().assert_outcomes(passed=2)


def test_a_partial_run_does_not_replace_the_baseline_unless_merging(gated):
    gated.runpytest("--evalkit-update-baseline").assert_outcomes(passed=2)
    before = (gated.path / "reports" / "baseline.json").read_text()
    partial = gated.runpytest("-k", "plain", "--evalkit-update-baseline")
    assert partial.ret == pytest.ExitCode.TESTS_FAILED
    partial.stdout.fnmatch_lines(
        [
            "evalkit: *baseline.json: baseline not written: this run covered only part of the suites "
            "(1 candidate(s) deselected, e.g. gate::terse)*"
        ]
    )
    assert (gated.path / "reports" / "baseline.json").read_text() == before
    assert (gated.path / "reports" / "latest" / "results.json").exists()  # the run itself is still recorded

    merged = gated.runpytest("-k", "plain", "--evalkit-merge-baseline")
    merged.assert_outcomes(passed=1)
    assert merged.ret == 0
    assert sorted(_baseline(gated)["suites"]["gate"]["candidates"]) == ["plain", "terse"]

    # A suite in the baseline whose file still exists but did not run also makes a run partial.
    (gated.path / "other.eval.yaml").write_text(
        (gated.path / "gate.eval.yaml").read_text().replace("suite: gate", "suite: other")
    )
    gated.runpytest("--evalkit-update-baseline").assert_outcomes(passed=4)
    refused = gated.runpytest("gate.eval.yaml", "--evalkit-update-baseline")
    refused.stdout.fnmatch_lines(["*suite(s) other are in the baseline but did not run*"])
    assert "other" in _baseline(gated)["suites"]
    limited = gated.runpytest("--evalkit-update-baseline", "--evalkit-limit", "3")
    limited.stdout.fnmatch_lines(["*baseline not written: --evalkit-limit evaluated only the first rows*"])


def test_a_damaged_baseline_fails_every_candidate_with_the_fix(gated):
    (gated.path / "reports").mkdir(exist_ok=True)
    (gated.path / "reports" / "baseline.json").write_text('{"kind": "evalkit-baseline", "version": 1,\n "suites": [}')
    result = gated.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        ["*reports/baseline.json:2: the baseline is not valid JSON*", "*fix: restore it from version control*"]
    )
    assert "Traceback" not in result.stdout.str()
    # Writing a new baseline replaces it.
    gated.runpytest("--evalkit-update-baseline").assert_outcomes(passed=2)
    assert _baseline(gated)["kind"] == "evalkit-baseline"


def test_run_folders_and_latest(gated):
    for _ in range(3):
        gated.runpytest("--evalkit-keep-runs", "2").assert_outcomes(passed=2)
    runs = sorted(p.name for p in (gated.path / "reports" / "runs").iterdir())
    assert len(runs) == 2
    latest = json.loads((gated.path / "reports" / "latest" / "results.json").read_text())
    assert latest["run"]["run_id"] == runs[-1]
    assert sorted(p.name for p in (gated.path / "reports" / "latest").iterdir()) == [
        "examples.jsonl",
        "report.html",
        "results.json",
        "summary.md",
    ]
    assert (gated.path / "reports" / "runs" / runs[-1] / "summary.md").read_text() == (
        gated.path / "reports" / "latest" / "summary.md"
    ).read_text()


def test_baseline_under_xdist_sees_the_whole_run(gated):
    gated.runpytest("-n", "2", "-p", "xdist", "--evalkit-update-baseline").assert_outcomes(passed=2)
    assert sorted(_baseline(gated)["suites"]["gate"]["candidates"]) == ["plain", "terse"]
    partial = gated.runpytest("-n", "2", "-p", "xdist", "-k", "terse", "--evalkit-update-baseline")
    partial.stdout.fnmatch_lines(["*baseline not written*1 candidate(s) deselected, e.g. gate::plain*"])
    compared = gated.runpytest("-n", "2", "-p", "xdist")
    compared.assert_outcomes(passed=2)
    record = json.loads((gated.path / "reports" / "latest" / "results.json").read_text())
    assert {c["baseline"]["status"] for c in record["suites"]["gate"].values()} == {"no significant change"}


def test_a_fixture_run_with_a_row_limit_cannot_become_the_baseline(gated):
    (gated.path / "test_limited.py").write_text(
        "def test_limited(evalkit):\n    assert evalkit.run('gate.eval.yaml', candidate='plain', limit=5).n == 5\n"
    )
    result = gated.runpytest("test_limited.py", "--evalkit-update-baseline")
    result.stdout.fnmatch_lines(["*baseline not written*gate::plain evaluated only the first rows*"])
    assert not (gated.path / "reports" / "baseline.json").exists()

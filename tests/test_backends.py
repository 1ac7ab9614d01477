"""Backends by name: a backend published by another package under the ``evalkit.backends`` entry-point group
runs a suite through the result cache, robustness, the baseline and every report, with no change to evalkit."""

from __future__ import annotations

import json
import os
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import write_jsonl

REPO = Path(__file__).resolve().parent.parent
ROWS = [
    {"id": "r1", "text": "Please refund the billing error", "label": "billing"},
    {"id": "r2", "text": "My shipping label is wrong", "label": "shipping"},
    {"id": "r3", "text": "Where is the shipping update", "label": "shipping"},
    {"id": "r4", "text": "Just saying hello", "label": "other"},
    {"id": "r5", "text": "billing question about my plan", "label": "billing"},
    {"id": "r6", "text": "A billing issue with shipping", "label": "shipping"},
]
SUITE = """\
    suite: keywords
    model: {backend: fake, name: v1, miss: -1.0}
    dataset: {path: data/rows.jsonl}
    task: {kind: classify, choices: [billing, shipping, other], target: label}
    candidates:
      plain: {template: "Ticket: {{ text }}\\nCategory:"}
      chat: {template: "Ticket: {{ text }}", chat: true, system: "Route the ticket."}
    thresholds: {accuracy: ">= 0.5"}
    robustness: {perturbations: [case, typos], examples: 6, tries: 8}
    """


@pytest.fixture
def fake_project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, monkeypatch):
    """A project whose suite names `backend: fake`, and a distribution on PYTHONPATH that publishes it."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "fake_evalkit_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-evalkit-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[evalkit.backends]\nfake = tests.fake_backend:FakeBackend\n")
    log = tmp_path_factory.mktemp("log") / "calls.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_BACKEND_LOG", str(log))
    write_jsonl(pytester.path / "suites" / "data" / "rows.jsonl", ROWS)
    (pytester.path / "suites" / "keywords.eval.yaml").write_text(textwrap.dedent(SUITE))
    return log


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_backend_from_an_entry_point_runs_a_suite_through_every_stage(pytester, fake_project):
    first = pytester.runpytest_subprocess("suites", "-p", "no:cacheprovider", "--evalkit-update-baseline")
    first.assert_outcomes(passed=2)
    assert any(line.startswith("load") for line in _calls(fake_project))
    assert "baseline written" in first.stdout.str()
    record = json.loads((pytester.path / "reports/latest/results.json").read_text())
    entry = record["suites"]["keywords"]["plain"]
    assert entry["model_fingerprint"] == "keyword-model-v1:none"
    assert entry["metrics"]["accuracy"] == 4 / 6  # r4 mentions no category, r6 two: the keyword model errs
    assert 0 <= entry["metrics"]["invariance"] < 1  # typos in the keyword flip the answer
    chat_prompt = json.loads((pytester.path / "reports/latest/examples.jsonl").read_text().splitlines()[0])["prompt"]
    assert chat_prompt == "<system>Route the ticket.\n<user>Ticket: Please refund the billing error\n<assistant>"
    for name in ("summary.md", "report.html", "examples.jsonl"):
        assert (pytester.path / "reports/latest" / name).stat().st_size > 0

    fake_project.write_text("")
    again = pytester.runpytest_subprocess("suites", "-p", "no:cacheprovider", "--junitxml=junit.xml")
    again.assert_outcomes(passed=2)
    assert _calls(fake_project) == []  # every answer and the robustness search came from the result cache
    again.stdout.fnmatch_lines(
        ["result cache *: 12 of 12 requests answered from it (100%), 0 computed; the model was not loaded"]
    )
    comparison = json.loads((pytester.path / "reports/latest/results.json").read_text())["suites"]["keywords"]["plain"]
    assert comparison["baseline"]["status"] == "no significant change" and comparison["baseline"]["flipped"] == []
    properties = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "junit.xml").iter("property")}
    assert properties["evalkit.verdict"] == "pass" and properties["evalkit.baseline.status"] == "no significant change"


def test_an_unknown_backend_is_named_with_the_line_and_the_known_ones(pytester, fake_project):
    path = pytester.path / "suites" / "keywords.eval.yaml"
    path.write_text(path.read_text().replace("backend: fake", "backend: fak"))
    result = pytester.runpytest_subprocess("suites", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*keywords.eval.yaml:2: model.backend: Input should be 'fake', 'hf', 'openai' or 'scripted' (did you mean 'fake'?)"
        ]
    )


def test_a_backends_own_settings_are_checked_where_the_suite_writes_them(pytester, fake_project):
    path = pytester.path / "suites" / "keywords.eval.yaml"
    path.write_text(path.read_text().replace("miss: -1.0", "mis: -1.0"))
    result = pytester.runpytest_subprocess("suites", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*keywords.eval.yaml:2: unknown key 'mis' (did you mean 'miss'?)"])
    path.write_text(path.read_text().replace("mis: -1.0", "miss: 2.0"))
    result = pytester.runpytest_subprocess("suites", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [
            "*keywords.eval.yaml:2: model.miss: Input should be less than or equal to 0",
            "*fix: `miss:` means: log-probability of a choice the prompt does not mention",
        ]
    )


def test_a_row_limited_run_under_xdist_never_writes_the_baseline(pytester, fake_project):
    """A worker's `evalkit.run(..., limit=N)` reaches the controller with its row limit, so the check that
    refuses a baseline from a row-limited run holds under pytest-xdist too."""
    pytester.makepyfile(
        test_limited="""
        def test_first_rows(evalkit):
            assert evalkit.run("suites/keywords.eval.yaml", candidate="plain", limit=2).n == 2
        """
    )
    result = pytester.runpytest_subprocess(
        "test_limited.py", "-n", "2", "-p", "no:cacheprovider", "--evalkit-update-baseline"
    )
    result.assert_outcomes(passed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*baseline not written: this run covered only part of the suites "
            "(keywords::plain evaluated only the first rows*"
        ]
    )
    assert not (pytester.path / "reports" / "baseline.json").exists()

"""A candidate with an xfail marker that fails is an expected failure in every report, with its reason, as
pytest counts it (xfailed, not failed); one that passes anyway is said to have passed unexpectedly."""

from __future__ import annotations

import json
import re
import textwrap

import datasets  # noqa: F401  (imported once here: the in-process pytest run below must not import numpy again)

from evalkit.record import CandidateEntry
from evalkit.verdict import Verdict, expected_failure
from tests.reports_helpers import candidate_result, write_record

REASON = "judge refused: its agreement is below min_agreement"


def test_the_reason_of_an_xfail_marker_as_a_suite_writes_it():
    assert expected_failure(("slow", {"xfail": {"strict": True, "reason": REASON}})) == REASON
    assert expected_failure(("xfail",)) == "expected to fail"
    assert expected_failure(({"xfail": {"strict": True}},)) == "expected to fail"
    assert expected_failure(("slow", {"skipif": {"reason": "x"}})) is None


def _entry(**values) -> CandidateEntry:
    return CandidateEntry(task="classify", n=1, metrics={}, ci95={}, **values)


def test_every_verdict_says_expected_failure_and_unexpected_pass():
    failed = Verdict.of(_entry(failures=["accuracy 0.2 does not meet '>= 0.5'"], expected_failure=REASON))
    assert (failed.terminal(), failed.junit()) == ("XFAIL", "xfail")
    assert failed.summary() == f"expected failure (threshold): {REASON}"
    passed = Verdict.of(_entry(failures=[], expected_failure=REASON))
    assert (passed.terminal(), passed.junit(), passed.summary()) == (
        "XPASS",
        "pass",
        f"pass, though expected to fail: {REASON}",
    )


def test_report_html_and_summary_md_count_an_expected_failure_apart(tmp_path):
    ok = candidate_result([True] * 8, candidate="few_shot")
    refused = candidate_result([False] * 8, candidate="judged", failures=["accuracy 0.000 does not meet '>= 0.5'"])
    refused.expected_failure = REASON
    folder = write_record(tmp_path / "reports", "20261121T100000Z", [ok, refused])
    html = (folder / "report.html").read_text()
    headline = re.search(r'<p class="status (\w+)" id="overall">(.*?)</p>', html)
    assert headline is not None
    assert headline.groups() == (
        "expected",
        f"1 of 2 candidates passed; 1 failed as expected (tickets::judged: {REASON})",
    )
    assert f'<td class="xfail">expected failure (threshold): {REASON}</td>' in html
    summary = (folder / "summary.md").read_text()
    shown = REASON.replace("_", "\\_")  # as markdown reads it
    assert f"**1 of 2 candidates passed; 1 failed as expected:** `tickets::judged` ({shown})" in summary
    assert "| ⚠️ expected failure (threshold): judge refused: its agreement is below min\\_agreeme… |" in summary
    assert json.loads((folder / "results.json").read_text())["suites"]["tickets"]["judged"]["expected_failure"] == (
        REASON
    )


def test_a_real_failure_beside_an_expected_one_is_still_the_headline(tmp_path):
    broken = candidate_result([False] * 4, candidate="broken", failures=["accuracy 0.000 does not meet '>= 0.5'"])
    refused = candidate_result([False] * 4, candidate="judged", failures=["accuracy 0.000 does not meet '>= 0.5'"])
    refused.expected_failure = REASON
    html = (write_record(tmp_path / "reports", "r1", [broken, refused]) / "report.html").read_text()
    assert '<p class="status bad" id="overall">1 of 2 candidates failed: tickets::broken; 1 failed as expected</p>' in (
        html
    )


def test_a_suite_xfail_marker_reaches_the_run_record(pytester):
    pytester.makefile(
        ".jsonl",
        **{"suites/rows": "\n".join(json.dumps({"id": f"r{i}", "text": f"t{i}", "label": "b"}) for i in range(6))},
    )
    pytester.makefile(
        ".eval.yaml",
        **{
            "suites/refused": textwrap.dedent(
                f"""\
                suite: refused
                model: {{backend: scripted, name: scripted, default: a}}
                dataset: {{path: rows.jsonl}}
                task: {{kind: classify, choices: [a, b], target: label}}
                candidates:
                  plain: {{template: "{{{{ text }}}}"}}
                thresholds: {{accuracy: ">= 0.5"}}
                markers:
                  - xfail: {{strict: true, reason: "{REASON}"}}
                """
            )
        },
    )
    result = pytester.runpytest_inprocess("suites/", "-p", "no:cacheprovider")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["plain *accuracy >= 0.5*XFAIL*"])
    latest = pytester.path / "reports" / "latest"
    entry = json.loads((latest / "results.json").read_text())["suites"]["refused"]["plain"]
    assert entry["expected_failure"] == REASON and entry["passed"] is False
    assert (
        f"0 of 1 candidates passed; 1 failed as expected (refused::plain: {REASON})"
        in (latest / "report.html").read_text()
    )

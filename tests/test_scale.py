"""Book-keeping that grows with the rows and nothing else: each candidate's entry and the run record built
once, examples.jsonl written as a stream, choices of a row's own viewed by position (never a matrix over
their texts), and a report.html of thousands of examples that opens, pages and searches in Chromium."""

from __future__ import annotations

import json
import textwrap
import tracemalloc

import datasets  # noqa: F401  (imported once here: the in-process pytest runs below must not import numpy again)
import pytest

from evalkit.results import CandidateResult, ExampleResult, build_record, example_rows
from evalkit.stats import by_position
from tests.reports_helpers import HEADER, candidate_result, write_record
from tests.test_report_html import PLANTED, _chromium


def _per_row_choices_project(pytester, rows: int) -> None:
    """A suite whose rows bring their own four choices; the scripted model always answers 'none of these',
    which sits at position (3 * i) % 4 of row i, while the gold answer sits at i % 4."""
    lines = []
    for i in range(rows):
        choices = [f"answer {i}-{k}" for k in range(3)]
        choices.insert((3 * i) % 4, "none of these")
        lines.append(json.dumps({"id": f"r{i}", "text": f"question {i}", "choices": choices, "answer": i % 4}))
    pytester.makefile(".jsonl", **{"suites/rows": "\n".join(lines)})
    pytester.makefile(
        ".eval.yaml",
        **{
            "suites/scale": textwrap.dedent(
                """\
                suite: scale
                model: {backend: scripted, name: scripted, default: none of these}
                dataset: {path: rows.jsonl}
                task: {kind: classify, choices_field: choices, target: answer}
                candidates:
                  plain: {template: "Q: {{ text }}\\nA:"}
                  other: {template: "Question: {{ text }}\\nAnswer:"}
                  third: {template: "{{ text }}\\n"}
                """
            )
        },
    )


def test_each_candidate_entry_and_the_run_record_are_built_once_per_run(pytester, monkeypatch):
    import evalkit.recorder

    headers: list[str] = []
    records: list[int] = []
    entry, build = CandidateResult.entry, evalkit.recorder.build_record

    def counted_entry(self):
        headers.append(self.candidate)
        return entry(self)

    def counted_build(*args, **kwargs):
        records.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(CandidateResult, "entry", counted_entry)
    monkeypatch.setattr(evalkit.recorder, "build_record", counted_build)
    _per_row_choices_project(pytester, 40)
    result = pytester.runpytest_inprocess("suites/", "-p", "no:cacheprovider", "--junitxml=junit.xml")
    result.assert_outcomes(passed=3)
    assert sorted(headers) == ["other", "plain", "third"]  # one entry each: terminal, junit and files share it
    assert records == [1]
    assert "evalkit.verdict" in (pytester.path / "junit.xml").read_text()


def test_choices_of_a_rows_own_are_viewed_by_position_not_as_a_matrix_over_their_texts(pytester):
    _per_row_choices_project(pytester, 40)
    pytester.runpytest_inprocess("suites/", "-p", "no:cacheprovider").assert_outcomes(passed=3)
    record = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())
    assert record["schema_version"] == 3
    errors = record["suites"]["scale"]["plain"]["errors"]
    assert "confusion" not in errors
    positions = errors["by_position"]["positions"]
    # Row i's gold is at i % 4 and the chosen answer at 3i % 4: right exactly when i is even, so the rows
    # with gold at A and C (i = 0, 2 mod 4) are all right and those at B and D all wrong.
    assert [(p["position"], p["gold"], p["correct"], p["chosen"]) for p in positions] == [
        ("A", 10, 10, 10),
        ("B", 10, 0, 10),
        ("C", 10, 10, 10),
        ("D", 10, 0, 10),
    ]
    assert [p["accuracy"] for p in positions] == [1.0, 0.0, 1.0, 0.0]
    assert errors["by_position"]["wrong"] == 20
    html = (pytester.path / "reports" / "latest" / "report.html").read_text()
    assert "by the position of the answer" in html and "confusion matrix" not in html


def test_by_position_counts_each_gold_and_chosen_position():
    view = by_position([0, 1, 1, 2], [0, 1, 0, 0])
    assert view == {
        "positions": [
            {"position": "A", "gold": 1, "correct": 1, "accuracy": 1.0, "chosen": 3, "chosen_share": 0.75},
            {"position": "B", "gold": 2, "correct": 1, "accuracy": 0.5, "chosen": 1, "chosen_share": 0.25},
            {"position": "C", "gold": 1, "correct": 0, "accuracy": 0.0, "chosen": 0, "chosen_share": 0.0},
        ],
        "wrong": 2,
    }


def _synthetic(rows: int, *, prompt_chars: int = 200) -> CandidateResult:
    result = candidate_result([i % 3 != 0 for i in range(rows)], candidate="big")
    for example in result.examples:
        example.prompt = f"{example.id} " + "x" * prompt_chars
    return result


def test_examples_jsonl_is_written_as_a_stream_of_20000_rows(tmp_path):
    """Writing 20,000 rows of about 300 bytes each never holds the file (6 MB) or its row dicts in memory."""
    from evalkit.report.writer import write_examples

    result = _synthetic(20_000)
    path = tmp_path / "examples.jsonl"
    tracemalloc.start()
    try:
        write_examples(path, example_rows([result]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = path.stat().st_size
    assert size > 5_000_000
    assert peak < 500_000, f"peak {peak} bytes while writing {size} bytes"
    lines = path.read_text().splitlines()
    assert len(lines) == 20_000
    assert json.loads(lines[-1])["id"] == "t-19999" and json.loads(lines[0])["correct"] is False


def test_a_candidate_header_does_not_copy_its_examples():
    result = _synthetic(1000)
    entry = result.entry()
    assert "examples" not in entry.as_json() and entry.passed is True and entry.cost["ms_per_example"] == 1.5
    assert entry.metrics is result.metrics  # shared, not copied: built in time independent of the rows
    assert build_record(HEADER, [result]).suites["tickets"]["big"].n == 1000


def test_a_report_of_5000_examples_opens_pages_and_searches_in_chromium(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    result = _synthetic(5000, prompt_chars=40)
    result.examples[4321].output = PLANTED
    result.examples[4321].correct = False
    result.examples.append(
        ExampleResult(id="needle", row=5001, prompt="p", output="a haystack", target="x", correct=False, score=0.0)
    )
    result.n = len(result.examples)
    folder = write_record(tmp_path / "reports", "20261121T100000Z", [result])
    html = (folder / "report.html").read_text()
    assert "<script>" not in html and "<img" not in html  # the planted markup is escaped inside the data
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.goto((folder / "report.html").as_uri())
            box = page.locator("details.examples")
            box.locator("summary").click()
            rows = box.locator("table.examples tbody tr")
            assert rows.count() == 50
            assert box.locator(".count").inner_text() == "examples 1-50 of 5001"
            assert rows.nth(0).locator("td").nth(0).inner_text() == "t-000"
            box.locator("button.next").click()
            assert box.locator(".count").inner_text() == "examples 51-100 of 5001"
            assert rows.nth(0).locator("td").nth(0).inner_text() == "t-050"
            box.locator("input.search").fill("haystack")
            assert box.locator(".count").inner_text() == "examples 1-1 of 1"
            assert rows.nth(0).locator("td").nth(0).inner_text() == "needle"
            box.locator("input.search").fill("t-4321")
            assert rows.nth(0).locator("td.output").inner_text() == PLANTED  # shown as text
            box.locator("input.search").fill("")
            box.locator("input.wrong-only").check()
            assert box.locator(".count").inner_text() == "examples 1-50 of 1669"  # 1667 + the planted + needle
            assert page.evaluate("window.__evalkit_pwned === undefined")
            assert page.locator("img").count() == 0 and page.locator("script").count() == 0
        finally:
            browser.close()
    assert problems == []

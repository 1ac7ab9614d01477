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
    assert peak < 100_000, f"peak {peak} bytes while writing {size} bytes"
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


def _choices_suite(folder, rows: int):
    """A per-row-choices suite of ``rows`` rows (as benchmarks/scaling.py writes it), on the scripted model."""
    folder.mkdir()
    with (folder / "rows.jsonl").open("w", encoding="utf-8") as out:
        for i in range(rows):
            choices = [f"answer {i}-{k} of the row's own" for k in range(3)]
            choices.insert((3 * i) % 4, "none of these")
            row = {"id": f"r{i}", "text": f"the order arrived late (ticket {i})", "choices": choices, "answer": i % 4}
            out.write(json.dumps(row) + "\n")
    (folder / "scale.eval.yaml").write_text(
        textwrap.dedent(
            """\
            suite: scale
            model: {backend: scripted, name: scripted, default: none of these}
            dataset: {path: rows.jsonl}
            task: {kind: classify, choices_field: choices, target: answer}
            candidates:
              plain: {template: "Review: {{ text }}\\nAnswer:"}
            """
        )
    )
    return folder / "scale.eval.yaml"


def test_the_peak_of_a_warm_evaluation_grows_by_under_2_7_kb_of_python_objects_a_row(tmp_path):
    """A warm evaluation (every answer from the result cache) of rows with four choices of their own, from
    reading the rows to the result: about 2.3 KB a row at the peak (3.4 KB before the rows shared their
    field names, the cache decoded each answer as it read it and the details were kept compact)."""
    from evalkit.testing import evaluate

    peaks = {}
    for rows in (1000, 4000):
        suite = _choices_suite(tmp_path / f"s{rows}", rows)
        evaluate(suite, "plain", cache_dir=tmp_path / f"cache{rows}")  # cold: fills the cache
        tracemalloc.start()
        try:
            result = evaluate(suite, "plain", cache_dir=tmp_path / f"cache{rows}")
            _, peaks[rows] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.cache is not None and result.cache.hits == rows
        assert result.metrics["accuracy"] == 0.5
    per_row = (peaks[4000] - peaks[1000]) / 3000
    assert per_row < 2700, f"{per_row:.0f} bytes per row at the peak ({peaks})"


def test_a_classify_examples_details_are_compact_and_read_as_the_dict_they_stand_for():
    from evalkit.results import _example_dict
    from evalkit.tasks import ChoiceDetails

    details = ChoiceDetails(["yes", "no"], (-0.12345678, -2.5), "no", False)
    expected = {"logprobs": {"yes": -0.123457, "no": -2.5}, "prediction_norm": "no", "correct_norm": False}
    assert details == expected and dict(details) == expected and list(details) == list(expected)
    assert details["correct_norm"] is False and "invariance" not in details and len(details) == 3
    assert repr(details) == repr(expected)
    example = ExampleResult(id="a", row=1, prompt="p", output="yes", target="no", correct=False, score=0.0)
    example.details = details
    row = _example_dict(example)
    assert type(row["details"]) is dict and json.dumps(row["details"]) == json.dumps(expected)
    details["invariance"] = 1.0  # what robustness adds: kept, in order
    assert list(details) == ["logprobs", "prediction_norm", "correct_norm", "invariance"]
    assert _example_dict(example)["details"] == {**expected, "invariance": 1.0}
    del details["prediction_norm"]
    assert "prediction_norm" not in details and len(details) == 3


def test_dataset_rows_share_field_names_and_short_texts_with_the_same_values_and_hash(tmp_path):
    import hashlib

    from evalkit.data import canonical_json, load_dataset

    lines = [
        {"id": f"r{i}", "text": "x" * 100 + str(i), "label": ["yes", "no"][i % 2], "tags": ["a", "b"]} for i in range(6)
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    dataset = load_dataset(path)
    assert [r.fields for r in dataset.rows] == lines and [r.line for r in dataset.rows] == list(range(1, 7))
    first, third = dataset.rows[0].fields, dataset.rows[2].fields
    assert all(a is b for a, b in zip(first, third))  # one string per field name
    assert first["label"] is third["label"] and first["tags"][1] is third["tags"][1]
    joined = "\n".join(canonical_json(line) for line in lines)
    assert dataset.content_hash == hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


def test_report_html_is_written_in_pieces_with_its_examples_data_as_one_json_object(tmp_path):
    """The page's 20,000 examples are written a few hundred at a time: the file is the page render_html
    returns, and writing it never holds the whole page (5 MB) and its JSON at once."""
    from evalkit.report.html import EXAMPLES_PER_PART, render_html
    from evalkit.report.writer import render_files

    result = _synthetic(20_000)
    result.examples[7].output = "</script><b>&"
    record = build_record({**HEADER, "run_id": "r"}, [result])
    tracemalloc.start()
    try:
        render_files(tmp_path, record, example_rows([result]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert len(html) > 4_500_000 and EXAMPLES_PER_PART < 20_000
    assert peak < 2 * len(html), f"peak {peak} bytes while writing {len(html)} characters"
    assert html == render_html(record, example_rows([result]))
    data = html.split('<script type="application/json" id="evalkit-examples">')[1].split("</script>")[0]
    assert "</script" not in data and "\\u003c/script\\u003e\\u003cb\\u003e\\u0026" in data
    examples = json.loads(data)
    assert list(examples) == ["c0"] and len(examples["c0"]) == 20_000
    assert examples["c0"][7][2] == "</script><b>&" and examples["c0"][-1][0] == "t-19999"

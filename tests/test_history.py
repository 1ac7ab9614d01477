"""How a prompt evolved: each candidate's metric across the kept run folders, marked where what produced it
changed, as `evalkit history` prints it and report.html draws it."""

from __future__ import annotations

from evalkit.cli import main
from evalkit.history import history_table, read_history
from tests.reports_helpers import candidate_result, write_record


def _runs(reports):
    """Four runs of two candidates: few_shot's template changes in the third run, and the fourth run is
    limited to its first rows (left out of the history)."""
    plan = [
        ("20261120T100000Z", 0.5, "t" * 64),
        ("20261121T100000Z", 0.5, "t" * 64),
        ("20261122T100000Z", 0.75, "u" * 64),
    ]
    for run_id, share, template in plan:
        few = candidate_result([i < share * 8 for i in range(8)], candidate="few_shot", template=template)
        zero = candidate_result([i < 2 for i in range(8)], candidate="zero_shot")
        write_record(reports, run_id, [few, zero])
    limited = write_record(reports, "20261123T100000Z", [candidate_result([True] * 2, candidate="few_shot")])
    results = limited / "results.json"
    results.write_text(results.read_text().replace('"row_limit": null', '"row_limit": 2'))
    return reports


def test_the_history_of_each_candidate_marks_what_changed(tmp_path):
    history = read_history(_runs(tmp_path / "reports") / "runs")
    shown = history["tickets"]
    assert shown["runs"] == ["20261120T100000Z", "20261121T100000Z", "20261122T100000Z"]
    assert [p["value"] for p in shown["candidates"]["few_shot"]] == [0.5, 0.5, 0.75]
    assert [p["changed"] for p in shown["candidates"]["few_shot"]] == [[], [], ["prompt template"]]
    assert [p["changed"] for p in shown["candidates"]["zero_shot"]] == [[], [], []]


def test_evalkit_history_prints_the_table(tmp_path, capsys):
    reports = _runs(tmp_path / "reports")
    assert main(["history", "tickets", "--reports", str(reports), "--last", "2"]) == 0
    assert capsys.readouterr().out == (
        "tickets (accuracy [95% CI], oldest run first)\n"
        "run               few_shot                zero_shot\n"
        "----------------  ----------------------  ------------------\n"
        "20261121T100000Z  0.500 [0.22, 0.78]      0.250 [0.07, 0.59]\n"
        "20261122T100000Z  0.750 [0.41, 0.93] (1)  0.250 [0.07, 0.59]\n"
        "(1) few_shot in 20261122T100000Z: prompt template changed\n"
    )
    assert history_table({}) == "no complete runs under the reports folder yet: run `pytest suites/` first\n"


def test_report_html_draws_the_history_with_the_change_ringed(tmp_path):
    reports = _runs(tmp_path / "reports")
    html = (reports / "runs" / "20261122T100000Z" / "report.html").read_text()
    assert "Across the last 3 runs" in html
    assert html.count('class="run-point changed"') == 1
    assert "few_shot in 20261122T100000Z: 0.750 (95% CI 0.409-0.929); changed: prompt template" in html

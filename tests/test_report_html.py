"""report.html in headless Chromium (Debian's package, driven by Playwright): it renders, logs no
errors, and shows a model output that contains <script> as text."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from evalkit.compare import Policy, Snapshot, compare
from evalkit.record import RunRecord
from evalkit.report.html import render_html
from tests.reports_helpers import candidate_result, write_record

PLANTED = '<script>window.__evalkit_pwned = 1</script><img src=x onerror="window.__evalkit_pwned = 2">'
ARTIFACTS = Path(os.environ.get("EVALKIT_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))


def _chromium() -> str:
    found = os.environ.get("EVALKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is missing: run `bash scripts/install-chromium.sh` (scripts/test.sh does it for you)")
    return found


@pytest.fixture
def report(tmp_path) -> Path:
    """A run of two candidates compared with a baseline; one flipped output plants a script."""
    adapter = tmp_path / "adapters" / "tickets-lora"
    curves = {  # what the run record keeps of the adapter's training
        "loss_curve": [{"step": s, "epoch": s / 10, "loss": 3.0 / s} for s in range(1, 31)],
        "validation": [
            {"epoch": e, "step": 10 * e, "loss": 0.5, "accuracy": a} for e, a in [(1, 0.6), (2, 0.8), (3, 0.9)]
        ],
    }
    before = [i % 4 != 3 for i in range(40)]
    after = [False] * 8 + before[8:]
    few_shot = candidate_result(after, candidate="few_shot", template="u" * 64)
    few_shot.examples[0].output = PLANTED
    few_shot.examples[1].prompt = "Ticket: </pre><b>bold?</b>\nCategory:"
    lora = candidate_result(before, candidate="lora")
    lora.adapter = {
        "name": "tickets-lora",
        "path": str(adapter),
        "content_hash": "a" * 64,
        "train_s": 61.0,
        "trainable_parameters": 4_884_480,
        "adapter_bytes": 19_600_000,
        **curves,
    }
    for result, base in ((few_shot, before), (lora, before)):
        result.baseline = compare(
            Snapshot.from_result(result),
            Snapshot.from_result(candidate_result(base, candidate=result.candidate)),
            Policy(),
        )
        if result.baseline.regressed:
            result.failures.append("regression against the baseline: " + result.baseline.reason)
    return write_record(tmp_path / "reports", "20261121T100000Z", [few_shot, lora]) / "report.html"


def test_report_html_escapes_model_output_without_a_browser(report):
    html = report.read_text()
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__evalkit_pwned = 1&lt;/script&gt;" in html
    assert "Ticket: &lt;/pre&gt;&lt;b&gt;bold?&lt;/b&gt;" in html
    assert "default-src 'none'" in html  # no script may run even if escaping failed
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html


def test_summary_md_shows_model_output_as_text(report):
    """summary.md becomes a PR comment: a flipped output can neither inject HTML or markdown nor mention anyone."""
    from evalkit.report.markdown import cell

    summary = (report.parent / "summary.md").read_text()
    assert "<script>" not in summary and "<img" not in summary
    assert "&lt;script>window.\\_\\_evalkit\\_pwned = 1&lt;/script>" in summary
    assert cell("[x](https://e.example) **b** @team a|b `c` \\ #1 ![i](j)\nnext") == (
        "\\[x\\](https://e.example) \\*\\*b\\*\\* &#64;team a\\|b \\`c\\` \\\\ \\#1 \\!\\[i\\](j) ⏎ next"
    )


def test_report_html_renders_in_headless_chromium(report):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "request", lambda r: problems.append(f"network: {r.url}") if not r.url.startswith("file:") else None
            )
            page.goto(report.as_uri())
            page.wait_for_load_state("load")

            assert page.title() == "evalkit run 20261121T100000Z"
            assert page.locator("#overall").inner_text() == "1 of 2 candidates failed: tickets::few_shot"
            rows = page.locator("table.results tbody tr")
            assert rows.count() == 2
            assert rows.nth(0).locator("td").nth(0).inner_text() == "few_shot"
            assert rows.nth(0).locator("td.fail").inner_text() == "FAIL (regressed)"
            assert rows.nth(1).locator("td").nth(3).inner_text() == "0.750"  # lora's baseline
            # The chart: one bar per candidate, drawn with the width of its accuracy (0.60 and 0.75 of the axis).
            bars = page.locator("svg.chart rect.bar")
            assert bars.count() == 2
            widths = [bars.nth(i).bounding_box()["width"] for i in range(2)]
            assert widths[0] > 50 and widths[1] / widths[0] == pytest.approx(0.75 / 0.60, rel=0.02)
            assert page.locator("svg.chart line.baseline").count() == 2
            curve = page.locator("svg.curve polyline.loss").bounding_box()
            assert curve is not None and curve["width"] > 100
            # Flipped examples side by side, and the planted markup shown as text, never run.
            flipped = page.locator("table.flipped tbody tr")
            assert flipped.count() == 6
            assert flipped.nth(0).locator("pre.output").inner_text() == PLANTED
            assert page.evaluate("window.__evalkit_pwned === undefined")
            assert page.locator("script").count() == 0 and page.locator("img").count() == 0
            assert page.locator("table.flipped b").count() == 0
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report-html.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert (ARTIFACTS / "report-html.png").stat().st_size > 10_000


def test_render_html_needs_no_training_record(report, tmp_path):
    """The training curves come from the run record: the adapter folder is never read, so a report rendered
    again after the adapter was deleted (or retrained) shows the adapter the run used; a record without
    curves (an older run) renders without them."""
    record = json.loads((report.parent / "results.json").read_text())
    record["suites"]["tickets"]["lora"]["adapter"]["path"] = str(tmp_path / "gone")
    rows = [json.loads(line) for line in (report.parent / "examples.jsonl").read_text().splitlines()]
    assert render_html(RunRecord.model_validate(record), rows) == report.read_text()
    for key in ("loss_curve", "validation"):
        del record["suites"]["tickets"]["lora"]["adapter"][key]
    html = render_html(RunRecord.model_validate(record), rows)
    assert 'polyline class="loss"' not in html and 'rect class="bar' in html


def test_the_frontier_chart_puts_each_candidate_where_its_figures_say(tmp_path):
    """Two prompts and an adapter priced at $3.60 an hour: each point sits at its accuracy and its cost per
    1,000 requests, the two that nothing beats are filled, and the break-even is written under the chart."""
    from evalkit.costs import CostModel

    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    cheap = candidate_result([i % 2 == 0 for i in range(40)], candidate="cheap")  # 0.50
    dear = candidate_result([i % 4 != 3 for i in range(40)], candidate="dear")  # 0.75
    lora = candidate_result([i % 8 != 7 for i in range(40)], candidate="lora")  # 0.875
    for result, seconds in ((cheap, 2.0), (dear, 8.0), (lora, 4.0)):  # 50, 200 and 100 ms per example
        result.compute_s = seconds
    lora.adapter = {
        "name": "lora",
        "content_hash": "a" * 64,
        "train_s": 36.0,
        "trainable_parameters": 1,
        "adapter_bytes": 1,
    }
    folder = write_record(tmp_path / "reports", "20261121T100000Z", [cheap, dear, lora], CostModel(machine_hour=3.6))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto((folder / "report.html").as_uri())
            points = page.locator("svg.frontier circle.point")
            assert points.count() == 3
            centre = {}
            for i in range(3):
                box = points.nth(i).bounding_box()
                name = points.nth(i).locator("xpath=..").locator("text").text_content()
                centre[name] = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            axis = page.locator("svg.frontier line.axis").first.bounding_box()
            origin_x, origin_y = page.locator("svg.frontier line.axis").nth(1).bounding_box()["x"], axis["y"]
            # cost per 1,000 requests: 0.05, 0.2 and 0.1 dollars (the cost axis is fitted to them, so it is
            # the differences that are in proportion); accuracy 0.5, 0.75, 0.875
            span = centre["dear"][0] - centre["cheap"][0]
            assert (centre["lora"][0] - centre["cheap"][0]) / span == pytest.approx(1 / 3, rel=0.02)
            assert centre["cheap"][0] - origin_x < span / 5  # the axis starts near the cheapest, not at $0
            assert (origin_y - centre["lora"][1]) / (origin_y - centre["cheap"][1]) == pytest.approx(1.75, rel=0.02)
            filled = page.locator("svg.frontier circle.pareto")
            assert sorted(filled.nth(i).locator("xpath=..").locator("text").text_content() for i in range(2)) == [
                "cheap",
                "lora",
            ]
            assert page.locator("ul.break-even li").all_inner_texts() == [
                "lora never pays back its 36 s of training ($0.036) against cheap: its requests cost $0.05 more "
                "per 1,000; it is 0.375 more accurate",
                "lora is cheaper per request than dear and 0.125 more accurate: it pays back its 36 s of training "
                "($0.036) after 360 requests",
            ]
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.locator("svg.frontier").screenshot(path=str(ARTIFACTS / "frontier.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "frontier.png").stat().st_size > 3_000


def test_frontier_labels_of_candidates_with_close_costs_stay_apart(tmp_path):
    """Five candidates at the same cost and of close accuracy (three share a point): no two names overlap,
    and every name stays inside the chart."""
    from evalkit.costs import CostModel

    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    results = []
    for n, name in enumerate(("zero_shot", "few_shot", "inline", "lora", "few_shot_lora")):
        result = candidate_result([i < 20 + (n % 2) for i in range(40)], candidate=name)
        result.compute_s = 1.2
        results.append(result)
    folder = write_record(tmp_path / "reports", "20261121T100000Z", results, CostModel(machine_hour=3.6))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto((folder / "report.html").as_uri())
            boxes = [
                page.locator("svg.frontier g.candidate-point text").nth(i).bounding_box() for i in range(len(results))
            ]
            chart = page.locator("svg.frontier").bounding_box()
        finally:
            browser.close()
    for i, a in enumerate(boxes):
        assert chart["x"] <= a["x"] and a["x"] + a["width"] <= chart["x"] + chart["width"] + 1
        for b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["width"] <= b["x"]
                or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"]
                or b["y"] + b["height"] <= a["y"]
            )
            assert apart, (a, b)


def test_the_candidate_table_fits_a_1400_pixel_page(tmp_path):
    """Every column of the widest table the demo writes (four metrics, the baseline, the costs) is visible
    without scrolling at 1,400 pixels."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    results = []
    for name in ("zero_shot", "few_shot", "inline", "lora", "few_shot_lora"):
        result = candidate_result([i % 3 != 0 for i in range(30)], candidate=name)
        result.metrics.update(macro_f1=0.61, invariance=0.55)
        result.ci95.update(macro_f1=(0.52, 0.7), invariance=(0.4, 0.69))
        result.baseline = compare(Snapshot.from_result(result), Snapshot.from_result(result), Policy())
        result.adapter = {
            "name": "tickets-lora",
            "content_hash": "a" * 64,
            "train_s": 47.0,
            "trainable_parameters": 4_884_480,
            "adapter_bytes": 19_600_000,
        }
        results.append(result)
    folder = write_record(tmp_path / "reports", "20261121T100000Z", results)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto((folder / "report.html").as_uri())
            widths = page.evaluate(
                "() => [...document.querySelectorAll('table.results')].map(t => [t.scrollWidth, t.clientWidth])"
            )
            assert widths and all(scroll <= client for scroll, client in widths), widths
            assert page.locator("table.results th").count() == 13  # candidate, 4 metrics, 4 baseline, 4 cost
        finally:
            browser.close()


def test_training_chart_marks_the_kept_epoch_over_fitting_and_every_search_trial(tmp_path):
    """An adapter found by a search, that over-fitted: validation loss is drawn beside training loss, the kept
    epoch and the over-fitting point are marked where their epochs are, and each trial gets a chart of its
    own, the best outlined and a pruned one labelled."""
    import re

    def epoch_rows(val_losses):
        return [
            {"epoch": float(i + 1), "train_loss": 2.0 / (i + 1), "val_loss": v, "val_accuracy": 0.9 - 0.1 * i}
            for i, v in enumerate(val_losses)
        ]

    adapter = {
        "name": "tickets-lora",
        "content_hash": "b" * 64,
        "train_s": 50.0,
        "trainable_parameters": 4_884_480,
        "adapter_bytes": 19_600_000,
        "loss_curve": [{"step": s, "epoch": s / 10, "loss": 2.0 / s} for s in range(1, 41)],
        "validation": [],
        "epochs": epoch_rows([1.0, 0.8, 1.1, 1.5]),
        "best_epoch": 2.0,
        "overfitting": {
            "epoch": 4.0,
            "train_loss": 0.5,
            "val_loss": 1.5,
            "best_epoch": 2.0,
            "best_val_loss": 0.8,
            "patience": 2,
        },
        "search": {
            "objective": "validation_accuracy",
            "best": {"trial": 1, "value": 0.9, "params": {"learning_rate": 0.001}},
            "trials": [
                {
                    "number": 0,
                    "state": "complete",
                    "params": {"learning_rate": 0.01},
                    "value": 0.7,
                    "epochs": epoch_rows([1.0, 0.9]),
                },
                {
                    "number": 1,
                    "state": "complete",
                    "params": {"learning_rate": 0.001},
                    "value": 0.9,
                    "epochs": epoch_rows([0.9, 0.8]),
                },
                {
                    "number": 2,
                    "state": "pruned",
                    "params": {"learning_rate": 1e-5},
                    "value": None,
                    "pruned_at_epoch": 1.0,
                    "epochs": epoch_rows([3.0]),
                },
            ],
        },
    }
    lora = candidate_result([True, False] * 10, candidate="lora")
    lora.adapter = adapter
    twin = candidate_result([True, False] * 10, candidate="few_shot_lora")
    twin.adapter = adapter
    html = (write_record(tmp_path / "reports", "20261201T100000Z", [lora, twin]) / "report.html").read_text()
    assert html.count('aria-label="training curve of tickets-lora"') == 1  # one chart per adapter
    # x runs from 34 to 426 over 4 epochs: epoch 2 at 230, epoch 4 at 426. y runs from 146 (loss 0) to 34
    # (loss 1.5, the highest validation loss); the first steps' training loss, up to 2.0, is clipped there.
    assert '<line class="kept" x1="230.0" x2="230.0"' in html
    assert "loss (axis to 1.50; the first steps clipped)" in html
    assert (
        '<circle class="overfit" cx="426.0" cy="34.0" r="5"><title>over-fitting at epoch 4: validation loss 1.5000'
        in html
    )
    assert len(re.findall(r'<circle class="val" ', html)) == 4
    assert "Over-fitting at epoch 4: validation loss 1.5000 above its best 0.8000 (epoch 2)" in html
    trials = re.findall(r'<figure class="trial( best)?">.*?<figcaption>(.*?)</figcaption>', html, flags=re.S)
    assert trials == [("", "trial 1: complete"), (" best", "trial 2: complete"), ("", "trial 3: pruned at 1")]
    assert "<title>trial 3: learning_rate=1e-05; pruned</title>" in html

"""How evalkit's own bookkeeping grows with the rows: the warm re-run, the cold run outside model time, peak
memory, and the size of results.json and report.html (and the time Chromium takes to show its first
screen), at several row counts, for a task with a fixed label set and one whose choices come per row.

The model is evalkit's scripted test backend (``evalkit.testing``): it answers at once, so every second
measured here is evalkit's own work, not the model's.

    .venv/bin/python benchmarks/scaling.py                      # 500, 5,000 and 20,000 rows
    .venv/bin/python benchmarks/scaling.py --rows 500 --no-browser

Each measurement is a fresh ``pytest suites/`` process in a throw-away project; the figures go to the
terminal as a table and to ``--out`` (default benchmarks/results/scaling.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["positive", "negative"]
SCRIPTED = "none of these"  # what the scripted model answers to a row with choices of its own
WORDS = [
    "the",
    "order",
    "arrived",
    "late",
    "and",
    "the",
    "box",
    "was",
    "damaged",
    "but",
    "support",
    "was",
    "quick",
    "and",
    "kind",
]


@dataclass
class Measurement:
    task: str  # "fixed labels" or "per-row choices"
    rows: int
    collect_s: float  # pytest --collect-only: what any run pays before evaluating
    cold_s: float  # the first run: empty result cache, the scripted model answers every request
    warm_s: float  # the same run again: every answer from the result cache
    warm_over_collect_s: float
    peak_rss_mb: float  # of the warm run
    results_json_kb: float
    examples_jsonl_kb: float
    report_html_kb: float
    first_screen_s: float | None  # Chromium: from navigation to the summary shown (None: not measured)


def _text(i: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(12)) + f" (ticket {i})"


def write_project(folder: Path, task: str, rows: int) -> None:
    """A project with one suite of ``rows`` rows, answered by the scripted backend."""
    (folder / "suites" / "data").mkdir(parents=True)
    data = folder / "suites" / "data" / "rows.jsonl"
    with data.open("w", encoding="utf-8") as out:
        for i in range(rows):
            row: dict[str, object]
            if task == "fixed labels":
                row = {"id": f"r{i}", "text": _text(i), "label": LABELS[i % 2]}
            else:  # four choices, three of them texts of the row's own (as ARC, MMLU and HellaSwag rows have)
                choices = [f"answer {i}-{k} {WORDS[(i + k) % len(WORDS)]}" for k in range(3)]
                choices.insert((3 * i) % 4, SCRIPTED)  # the scripted model's answer, at a position that varies
                row = {"id": f"r{i}", "text": _text(i), "choices": choices, "answer": i % 4}
            out.write(json.dumps(row) + "\n")
    if task == "fixed labels":
        task_block = f"  kind: classify\n  choices: {json.dumps(LABELS)}\n  target: label\n"
        answers = f"  default: {LABELS[0]}\n"
    else:
        task_block = "  kind: classify\n  choices_field: choices\n  target: answer\n"
        answers = f"  default: {SCRIPTED}\n"
    (folder / "suites" / "scale.eval.yaml").write_text(
        "suite: scale\n"
        "model:\n  backend: scripted\n  name: scripted\n" + answers + "dataset:\n  path: data/rows.jsonl\n"
        "task:\n" + task_block + "candidates:\n"
        '  plain:\n    template: "Review: {{ text }}\\nAnswer:"\n'
        'thresholds:\n  accuracy: ">= 0.1"\n',
        encoding="utf-8",
    )
    (folder / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntestpaths = ['suites']\n", encoding="utf-8")


def _pytest(folder: Path, *args: str) -> tuple[float, float]:
    """Run pytest in ``folder``: (wall seconds, peak RSS in MB of that process)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        raise RuntimeError(f"pytest failed in {folder}:\n{output.decode(errors='replace')[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def first_screen_s(report: Path) -> float:
    """Seconds from navigation to report.html's summary line shown, in headless Chromium."""
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("EVALKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        started = time.perf_counter()
        page.goto(report.as_uri(), wait_until="commit")
        page.wait_for_selector("#overall", state="visible")
        shown = time.perf_counter() - started
        browser.close()
    return shown


def measure(task: str, rows: int, *, browser: bool) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="evalkit-scaling-") as tmp:
        folder = Path(tmp)
        write_project(folder, task, rows)
        collect_s, _ = _pytest(folder, "--collect-only")
        cold_s, _ = _pytest(folder)
        warm_s, rss = _pytest(folder)
        latest = folder / "reports" / "latest"
        html = latest / "report.html"
        return Measurement(
            task=task,
            rows=rows,
            collect_s=round(collect_s, 2),
            cold_s=round(cold_s, 2),
            warm_s=round(warm_s, 2),
            warm_over_collect_s=round(warm_s - collect_s, 2),
            peak_rss_mb=round(rss, 1),
            results_json_kb=round((latest / "results.json").stat().st_size / 1024, 1),
            examples_jsonl_kb=round((latest / "examples.jsonl").stat().st_size / 1024, 1),
            report_html_kb=round(html.stat().st_size / 1024, 1),
            first_screen_s=round(first_screen_s(html), 2) if browser else None,
        )


def table(measurements: list[Measurement]) -> str:
    from tabulate import tabulate

    headers = [
        "task",
        "rows",
        "collect s",
        "cold s",
        "warm s",
        "warm - collect s",
        "peak RSS MB",
        "results.json KB",
        "examples.jsonl KB",
        "report.html KB",
        "first screen s",
    ]
    return tabulate([list(asdict(m).values()) for m in measurements], headers=headers, tablefmt="github")


def growth(measurements: list[Measurement]) -> list[str]:
    """Per task, what one more row costs between the smallest and the largest run."""
    lines = []
    for task in dict.fromkeys(m.task for m in measurements):
        ms = sorted((m for m in measurements if m.task == task), key=lambda m: m.rows)
        if len(ms) < 2:
            continue
        a, b = ms[0], ms[-1]
        extra = b.rows - a.rows
        lines.append(
            f"{task}: per row, warm re-run {1e3 * (b.warm_s - a.warm_s) / extra:.3f} ms, "
            f"peak RSS {1024 * (b.peak_rss_mb - a.peak_rss_mb) / extra:.2f} KB, "
            f"results.json {1024 * (b.results_json_kb - a.results_json_kb) / extra:.1f} bytes, "
            f"report.html {1024 * (b.report_html_kb - a.report_html_kb) / extra:.1f} bytes"
        )
    return lines


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500, 5000, 20000])
    parser.add_argument("--tasks", nargs="+", default=["fixed labels", "per-row choices"])
    parser.add_argument("--no-browser", action="store_true", help="do not time report.html in Chromium")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scaling.json")
    args = parser.parse_args(argv)
    measurements = [measure(task, n, browser=not args.no_browser) for task in args.tasks for n in args.rows]
    print(table(measurements))
    for line in growth(measurements):
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(m) for m in measurements], indent=2) + "\n", encoding="utf-8")
    return measurements


if __name__ == "__main__":
    main()

"""``summary.md``: the run in a form ready to paste as a pull-request comment."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from evalkit.golden import golden_line
from evalkit.record import RunRecord
from evalkit.report.view import FLIPS_SHOWN, CandidateView, RunView, build_view

CELL_CHARS = 80


def cell(value: Any, limit: int = CELL_CHARS) -> str:
    """Text safe inside a markdown table cell: no pipes, newlines or HTML that a PR comment would render."""
    text = value if isinstance(value, str) else repr(value) if value is not None else ""
    text = text.replace("\r", "").replace("\n", " ⏎ ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    # "<" and "&" are all a comment's HTML needs escaped; ">" stays readable ("'x'->'X'"). Markdown's inline
    # syntax is escaped so model output shows as typed (no links, images, emphasis), and "@" so it mentions nobody.
    text = re.sub(r"([\\|`*_\[\]~#!])", r"\\\1", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("@", "&#64;") or " "


def _mark(value: float) -> str:
    return "✓" if value >= 1 else "✗" if value <= 0 else f"{value:.0%}"


def _verdict(c: CandidateView) -> str:
    return {"pass": "✅ ", "xfail": "⚠️ ", "fail": "❌ "}[c.outcome] + cell(c.verdict)


def _flips_section(c: CandidateView) -> list[str]:
    flips = c.flips
    if not flips:
        return []
    worse, better = c.flip_counts
    lines = [
        f"**{c.suite} · {c.name}**: {worse} got worse, {better} got better"
        + (f" (first {FLIPS_SHOWN} shown)" if len(flips) > FLIPS_SHOWN else ""),
        "",
    ]
    body = [
        [
            cell(f["id"], 40),
            f"{cell(f['baseline_output'])} {_mark(f['baseline'])}",
            f"{cell(f['output'])} {_mark(f['current'])}",
            cell(f["target"]),
        ]
        for f in flips[:FLIPS_SHOWN]
    ]
    lines.append(
        tabulate(body, headers=["example", "baseline", "now", "expected"], tablefmt="github", disable_numparse=True)
    )
    return [*lines, ""]


def _robustness_section(view: RunView) -> list[str]:
    robust = [(c, c.robustness) for s in view.suites for c in s.candidates if c.robustness is not None]
    if not robust:
        return []
    lines = ["### Robustness", ""]
    body = []
    for c, r in robust:
        body.append(
            [
                f"{c.suite} · {c.name}",
                c.metric_cell("invariance"),
                f"{r.held} of {r.examples}",
                str(r.tries),
                ", ".join(r.perturbations),
                f"{r.wall_s:.0f}s",
            ]
        )
    lines.append(
        tabulate(
            body,
            headers=["candidate", "invariance [95% CI]", "rows that held", "tries per row", "perturbations", "time"],
            tablefmt="github",
            disable_numparse=True,
        )
    )
    lines.append("")
    for c, _ in robust:
        flips = c.robustness_flips
        if not flips:
            continue
        lines += [
            f"**{c.suite} · {c.name}**: {len(flips)} row(s) changed their answer"
            + (f" (first {FLIPS_SHOWN} shown)" if len(flips) > FLIPS_SHOWN else "")
            + "; the smallest change found for each:",
            "",
        ]
        rows = [
            [cell(f["id"], 40), cell(f["change"]), cell(f["input_after"]), cell(f["before"]), cell(f["after"])]
            for f in flips[:FLIPS_SHOWN]
        ]
        lines.append(
            tabulate(
                rows,
                headers=["example", "change", "perturbed input", "answer", "perturbed answer"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
        lines.append("")
    return lines


def _costs_section(record: RunRecord) -> list[str]:
    """Each suite's accuracy-cost frontier and every adapter's break-even, in words."""
    from evalkit.costs import economics_lines

    costs = record.costs
    if not costs:
        return []
    currency = costs.prices["currency"]
    lines = ["### Cost and accuracy", ""]
    for suite, economics in costs.suites.items():
        lines += [f"**{cell(suite)}**", ""] + [f"- {cell(line, 400)}" for line in economics_lines(economics, currency)]
        lines.append("")
    prices = costs.prices
    lines += [
        f"<sub>Prices ([tool.evalkit.costs]): in-process models at {prices['machine_hour']} {currency} per machine-hour "
        "of measured model time; token prices where a model has them.</sub>",
        "",
    ]
    return lines


def _pairs_section(record: RunRecord) -> list[str]:
    """Each suite's `compare:` checks (a failed one with the rows that differ) and its paired table."""
    from evalkit.pairs import TABLE_HEADERS, check_line, table_rows, table_title

    lines: list[str] = []
    for suite, entries in record.suites.items():
        checks = [(name, check) for name, entry in entries.items() for check in entry.compared or []]
        table = (record.pairs or {}).get(suite)
        if not checks and table is None:
            continue
        lines += [f"**{cell(suite)}**", ""]
        for name, check in checks:
            lines.append(f"- {'✅' if check.passed else '❌'} {cell(check_line(name, check), 400)}")
            if not check.passed and check.disagreeing:
                body = [
                    [cell(d.id, 40), cell(d.output), cell(d.reference_output)]
                    + ([_value(d.candidate), _value(d.reference)] if d.candidate is not None else [])
                    for d in check.disagreeing[:FLIPS_SHOWN]
                ]
                headers = ["example", name, check.reference] + (
                    ["value", "reference value"] if body and len(body[0]) > 3 else []
                )
                lines += ["", tabulate(body, headers=headers, tablefmt="github", disable_numparse=True), ""]
        if checks:
            lines.append("")
        if table is not None:
            lines += [
                cell(table_title(table), 400),
                "",
                tabulate(table_rows(table), headers=TABLE_HEADERS, tablefmt="github", disable_numparse=True),
                "",
            ]
    return ["### Runs compared", "", *lines] if lines else []


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _decision_section(record: RunRecord) -> list[str]:
    """Each searched prompt's dev score against its one golden read, and each suite's best prompt against its
    best adapter."""
    from evalkit.decision import suite_lines

    lines = []
    for suite in record.suites:
        found = suite_lines(record, suite)
        if found:
            lines += [f"**{cell(suite)}**", ""] + [f"- {cell(line, 400)}" for line in found] + [""]
    return ["### Prompt or fine-tune", "", *lines] if lines else []


def _judge_section(view: RunView) -> list[str]:
    """Each judged suite: the judge and its measured agreement, and the first outputs it failed."""
    lines: list[str] = []
    for suite in view.suites:
        described = suite.judge_lines
        if not described:
            continue
        lines += [f"**{suite.name}**: " + cell(described[0], 400), ""]
        lines += [f"- {cell(line.strip(), 400)}" for line in described[1:]]
        lines.append("")
        for c in suite.candidates:
            failed = [e for e in c.judged if not e.get("correct")][:FLIPS_SHOWN]
            if not failed:
                continue
            lines += [f"`{c.name}`: the first outputs the judge failed", ""]
            body = [
                [cell(e["id"], 40), cell(e["output"]), cell(e.get("grade")), _probability(e), cell(e["said"])]
                for e in failed
            ]
            headers = ["example", "output", "grade", "probability", "judge's answer"]
            lines += [tabulate(body, headers=headers, tablefmt="github", disable_numparse=True), ""]
    return ["### Judges", "", *lines] if lines else []


def _probability(example: dict[str, Any]) -> str:
    value = example.get("probability")
    return "-" if value is None else f"{value:.2f}"


def _headline(view: RunView) -> str:
    """The run in one bold line: what failed, what failed as expected, or that all passed."""
    failed, expected = view.failed, view.expected_failures
    if failed:
        return (
            f"**{len(failed)} of {view.total} candidates failed:** "
            + ", ".join(f"`{c.suite}::{c.name}`" for c in failed)
            + (f"; {len(expected)} failed as expected" if expected else "")
        )
    if expected:
        return (
            f"**{view.total - len(expected)} of {view.total} candidates passed; {len(expected)} failed as "
            "expected:** " + "; ".join(f"`{c.suite}::{c.name}` ({cell(c.expected_failure or '')})" for c in expected)
        )
    return f"**All {view.total} candidates passed.**"


def render_summary(record: RunRecord, rows: Iterable[dict[str, Any]]) -> str:
    view: RunView = build_view(record, rows)
    lines = [f"## {view.title}", "", " · ".join(view.facts), "", _headline(view)]
    lines.append("")
    for suite in view.suites:
        lines += [f"### {suite.name} ({suite.task}, {suite.n} examples)", ""]
        several = len({c.entry.model_fingerprint for c in suite.candidates}) > 1  # a model column
        body = [
            [c.name, *([cell(c.entry.model)] if several else []), c.metric, c.metric_cell()]
            + [c.baseline_cell, c.change_cell, c.p_cell, _verdict(c)]
            for c in suite.candidates
        ]
        lines.append(
            tabulate(
                body,
                headers=["candidate", *(["model"] if several else []), "metric", "value [95% CI]"]
                + ["baseline", "change [95% CI]", "p", "verdict"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
        lines.append("")
        for c in suite.candidates:
            comparison = c.comparison
            notes = list(comparison.changes) if comparison is not None else []
            if comparison is not None and (comparison.only_current or comparison.only_baseline):
                notes.append(
                    f"compared on the {comparison.shared} examples both runs share "
                    f"({comparison.only_current} new, {comparison.only_baseline} only in the baseline)"
                )
            if c.flaky:
                notes.append(f"{len(c.flaky)} example(s) vary between its {c.entry.repeats} repeats")
            if notes:
                lines.append(f"- `{c.name}`: " + "; ".join(notes))
        reads = (record.golden or {}).get(suite.name)
        if reads is not None:
            lines.append(f"- {'⚠️ ' if reads.over_budget else ''}{cell(golden_line(suite.name, reads), 400)}")
        if lines[-1] != "":
            lines.append("")
    flip_lines = [line for s in view.suites for c in s.candidates for line in _flips_section(c)]
    if flip_lines:
        lines += ["### Flipped examples", "", *flip_lines]
    lines += _pairs_section(record)
    lines += _robustness_section(view)
    lines += _judge_section(view)
    lines += _costs_section(record)
    lines += _decision_section(record)
    compared = any(c.comparison is not None for s in view.suites for c in s.candidates)
    if not compared and not (view.run.baseline is not None and view.run.baseline.updated):
        lines += ["No baseline to compare with yet: `pytest suites/ --evalkit-update-baseline` writes one.", ""]
    lines.append(
        "<sub>p: exact McNemar test on the examples that flipped; change: on the examples both runs share. "
        "Full report: report.html in the run's folder.</sub>"
    )
    return "\n".join(lines).rstrip() + "\n"

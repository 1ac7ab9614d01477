"""``report.html``: one self-contained page (no network, no external script) for a run.

Rendered by Jinja2 with autoescaping, so model output always shows as text; a Content-Security-Policy
that allows only the page's own script (by its hash) is a second line of defence. Charts are inline SVG
computed here. Each candidate's examples are embedded once, as JSON, and paged and searched by that one
script, so the page opens as fast with 20,000 examples as with 20.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from evalkit.decision import suite_lines
from evalkit.golden import golden_line
from evalkit.record import AdapterInfo, EpochRow, PromptSearchInfo, RunRecord, SearchSummary, SuiteCosts
from evalkit.report.view import CandidateView, RunView, build_view

CHART_WIDTH = 640
BAR_HEIGHT = 22
LABEL_WIDTH = 150


def _bar_chart(candidates: list[CandidateView]) -> dict[str, Any]:
    """Horizontal bars of the gated metric with 95% interval whiskers and the baseline as a tick."""
    plot = CHART_WIDTH - LABEL_WIDTH - 60

    def x(value: float) -> float:
        return round(LABEL_WIDTH + max(0.0, min(1.0, value)) * plot, 1)

    bars = []
    for i, c in enumerate(candidates):
        y = 10 + i * (BAR_HEIGHT + 8)
        lo, hi = c.interval()
        base = c.baseline_value
        bars.append(
            {
                "label": c.name,
                "y": y,
                "mid": y + BAR_HEIGHT / 2,
                "x0": LABEL_WIDTH,
                "width": round(x(c.value()) - LABEL_WIDTH, 1),
                "lo": x(lo),
                "hi": x(hi),
                "value": f"{c.value():.3f}",
                "value_x": x(hi) + 6,
                "baseline": None if base is None else x(base),
                "passed": c.passed,
                "title": f"{c.name}: {c.metric} {c.value():.3f}, 95% CI {lo:.3f}-{hi:.3f}"
                + ("" if base is None else f", baseline {base:.3f}"),
            }
        )
    height = 20 + len(candidates) * (BAR_HEIGHT + 8) + 20
    ticks = [{"x": x(t / 4), "label": f"{t / 4:.2f}"} for t in range(5)]
    return {"width": CHART_WIDTH, "height": height, "bars": bars, "ticks": ticks, "axis_y": height - 18}


class _Plot:
    """Epochs along x, a value from 0 to ``top`` along y, inside a ``width`` x ``height`` box with margins."""

    def __init__(self, width: int, height: int, pad: int, epochs: float, top: float) -> None:
        self.width, self.height, self.pad = width, height, pad
        self.epochs, self.top = epochs or 1.0, top or 1.0

    def x(self, epoch: float) -> float:
        return round(self.pad + epoch / self.epochs * (self.width - 2 * self.pad), 1)

    def y(self, value: float, top: float | None = None) -> float:
        share = max(0.0, min(1.0, value / (top or self.top)))
        return round(self.height - self.pad - share * (self.height - 2 * self.pad), 1)

    def line(self, points: list[tuple[float, float]], top: float | None = None) -> str:
        return " ".join(f"{self.x(e)},{self.y(v, top)}" for e, v in points)


def _losses(adapter: AdapterInfo) -> tuple[list[tuple[float, float]], list[EpochRow]]:
    """Training loss per logged step (by epoch), and the per-epoch rows (train loss, validation loss and
    accuracy); a record from before per-epoch rows existed gives its validation entries instead."""
    train = [(p.epoch, p.loss) for p in adapter.loss_curve or []]
    epochs = adapter.epochs or [
        EpochRow(epoch=v.epoch, val_loss=v.loss, val_accuracy=v.accuracy) for v in adapter.validation or []
    ]
    return train, epochs


def _trial_charts(search: SearchSummary | None) -> list[dict[str, Any]]:
    """One small chart per search trial: its training and validation loss per epoch."""
    if search is None:
        return []
    trials = [
        (t, [e for e in t.epochs or [] if isinstance(e, EpochRow)])
        for t in search.trials
        if t.epochs and isinstance(t.epochs[0], EpochRow)
    ]
    if not trials:
        return []
    epochs = max(e.epoch for _, rows in trials for e in rows)
    top = max(v for _, rows in trials for e in rows for v in (e.train_loss, e.val_loss) if v is not None)
    plot = _Plot(150, 90, 12, epochs, top)
    best = search.best.trial if search.best is not None else None
    charts = []
    for t, rows in trials:
        number = t.number or 0
        settings = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in (t.params or {}).items()
        )
        charts.append(
            {
                "label": f"trial {number + 1}",
                "state": t.state if t.state != "pruned" else f"pruned at {t.pruned_at_epoch or 0:g}",
                "best": number == best,
                "train": plot.line([(e.epoch, e.train_loss) for e in rows if e.train_loss is not None]),
                "val": plot.line([(e.epoch, e.val_loss) for e in rows]),
                "title": f"trial {number + 1}: {settings}; {t.state}"
                + (f", {search.objective} {t.value:.4f}" if t.value is not None else ""),
            }
        )
    return [{"width": plot.width, "height": plot.height, "pad": plot.pad, "charts": charts}]


def _training_curve(adapter: AdapterInfo) -> dict[str, Any] | None:
    """An adapter's training against validation, as the run record keeps them: training loss per step,
    validation loss and accuracy per epoch, the epoch kept, where over-fitting showed; and each search
    trial as a small chart of its own."""
    train, epochs = _losses(adapter)
    if len(train) < 2:
        return None
    last = max([e for e, _ in train] + [e.epoch for e in epochs])
    # The first steps' loss is often ten times the rest: the axis fits the loss from half an epoch on
    # (and every validation loss), and the first steps are drawn clipped at the top.
    settled = [v for e, v in train if e >= min(0.5, last / 2)] or [v for _, v in train]
    top = max(settled + [e.val_loss for e in epochs])
    plot = _Plot(460, 180, 34, last, top)
    overfitting = adapter.overfitting
    kept = adapter.best_epoch
    return {
        "name": adapter.name or "",
        "width": plot.width,
        "height": plot.height,
        "pad": plot.pad,
        "loss": plot.line(train),
        "val_loss": plot.line([(e.epoch, e.val_loss) for e in epochs]),
        "val_points": [{"x": plot.x(e.epoch), "y": plot.y(e.val_loss)} for e in epochs],
        "accuracy": plot.line([(e.epoch, e.val_accuracy) for e in epochs], 1.0),
        "max_loss": f"{top:.2f}",
        "clipped": any(v > top for _, v in train),
        "last_epoch": f"{last:g}",
        "kept": None if kept is None else {"x": plot.x(kept), "epoch": f"{kept:g}"},
        "overfitting": None
        if overfitting is None
        else {
            "x": plot.x(overfitting.epoch),
            "y": plot.y(overfitting.val_loss),
            "text": f"over-fitting at epoch {overfitting.epoch:g}: validation loss {overfitting.val_loss:.4f} "
            f"above its best {overfitting.best_val_loss:.4f} (epoch {overfitting.best_epoch:g}) while training "
            f"loss fell to {overfitting.train_loss:.4f}",
        },
        "epochs": [{"label": f"{e.val_accuracy:.2f}"} for e in epochs],
        "trials": _trial_charts(adapter.search),
    }


def _adapter_curves(candidates: list[CandidateView]) -> list[dict[str, Any]]:
    """One training chart per adapter, however many candidates use it."""
    curves: dict[str, dict[str, Any]] = {}
    for c in candidates:
        adapter = c.entry.adapter
        if adapter is None:
            continue
        key = f"{adapter.name}@{adapter.content_hash}"
        if key not in curves and (curve := _training_curve(adapter)) is not None:
            curves[key] = curve
    return list(curves.values())


def _frontier_chart(economics: SuiteCosts | None, currency: str) -> dict[str, Any] | None:
    """Accuracy (with its 95% interval) against cost per 1,000 requests, one point per candidate; the
    Pareto-optimal points filled and joined, cheapest first."""
    if economics is None or not economics.candidates:
        return None
    from evalkit.costs import break_even_text, money

    width, height, left, bottom, top, right = 640, 300, 56, 40, 14, 120
    candidates = economics.candidates
    low, high = _cost_axis([c.per_1k_requests for c in candidates.values()])

    def x(cost: float) -> float:
        return round(left + (cost - low) / (high - low) * (width - left - right), 1)

    def y(accuracy: float) -> float:
        return round(top + (1 - max(0.0, min(1.0, accuracy))) * (height - top - bottom), 1)

    points = []
    for name, c in sorted(candidates.items(), key=lambda item: item[1].per_1k_requests):
        lo, hi = c.ci95
        points.append(
            {
                "name": name,
                "x": x(c.per_1k_requests),
                "y": y(c.accuracy),
                "lo": y(lo),
                "hi": y(hi),
                "pareto": c.pareto_optimal,
                "title": f"{name}: accuracy {c.accuracy:.3f} (95% CI {lo:.3f}-{hi:.3f}), "
                f"{money(c.per_1k_requests, currency)} per 1,000 requests"
                + (f", {money(c.training, currency)} of training once" if c.training else ""),
            }
        )
    frontier = " ".join(f"{p['x']},{p['y']}" for p in points if p["pareto"])
    place_labels(points, width=width, bottom=height - bottom)
    x_ticks = [
        {"x": x(low + (high - low) * t / 4), "label": money(low + (high - low) * t / 4, currency)} for t in range(5)
    ]
    y_ticks = [{"y": y(t / 4), "label": f"{t / 4:.2f}"} for t in range(5)]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "axis_y": height - bottom,
        "top": top,
        "points": points,
        "frontier": frontier,
        "x_ticks": x_ticks,
        "y_ticks": y_ticks,
        "break_even": [break_even_text(pair, currency) for pair in economics.break_even],
    }


def _search_chart(name: str, search: PromptSearchInfo) -> dict[str, Any]:
    """Every trial's dev score (a pruned one's last step, hollow), the best trial ringed, and the golden
    set's one read of the chosen prompt as a line across."""
    width, height, left, bottom, top, right = 640, 220, 48, 30, 12, 110
    scores = search.trial_scores
    n = max(1, len(scores) - 1)

    def x(i: int) -> float:
        return round(left + i / n * (width - left - right), 1)

    def y(value: float) -> float:
        return round(top + (1 - max(0.0, min(1.0, value))) * (height - top - bottom), 1)

    test = search.optimism.test if search.optimism is not None else None
    return {
        "name": name,
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "axis_y": height - bottom,
        "trials": [
            {"x": x(i), "y": y(v), "best": i == search.best_trial, "title": f"trial {i + 1}: dev {v:.3f}"}
            for i, v in enumerate(scores)
            if v is not None
        ],
        "test_y": None if test is None else y(test),
        "test_label": None if test is None else f"golden set {test:.3f}",
        "y_ticks": [{"y": y(t / 4), "label": f"{t / 4:.2f}"} for t in range(5)],
    }


def _cost_axis(costs: list[float]) -> tuple[float, float]:
    """The cost axis fitted to the points: their range with a margin on each side (never below zero)."""
    low, high = min(costs), max(costs)
    margin = (high - low) * 0.1 if high > low else max(abs(high) * 0.5, 0.001)
    return max(0.0, low - margin), high + margin


LABEL_CHAR_WIDTH, LABEL_HEIGHT = 7.0, 13.0  # about 12px system-ui text


def place_labels(points: list[dict[str, Any]], *, width: float, bottom: float) -> None:
    """Give each point a label position (``label_x``, ``label_y``, ``anchor``) where its name overlaps no
    other label and no other point and stays inside the chart (``width`` wide, above ``bottom``): beside it
    to the right or the left, then ever further above or below; the first free place wins."""
    taken: list[tuple[float, float, float, float]] = [(p["x"] - 5, p["y"] - 5, p["x"] + 5, p["y"] + 5) for p in points]
    for p in sorted(points, key=lambda p: (p["y"], p["x"])):
        label_width = LABEL_CHAR_WIDTH * len(p["name"])
        for dy in (-6, 16, -20, 30, -34, 44, -48, 58, -62):
            for side in ("start", "end"):
                x0 = p["x"] + 8 if side == "start" else p["x"] - 8 - label_width
                rect = (x0, p["y"] + dy - LABEL_HEIGHT + 3, x0 + label_width, p["y"] + dy + 3)
                inside = rect[0] >= 0 and rect[1] >= 0 and rect[2] <= width and rect[3] <= bottom
                if inside and not any(_overlap(rect, other) for other in taken):
                    p.update(label_x=rect[0] if side == "start" else rect[2], label_y=p["y"] + dy, anchor=side)
                    taken.append(rect)
                    break
            else:
                continue
            break
        else:  # nowhere free: beside the point, as before
            p.update(label_x=p["x"] + 8, label_y=p["y"] - 6, anchor="start")


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


PALETTE = ("#0969da", "#1a7f37", "#cf222e", "#8250df", "#bc4c00", "#1b7c83", "#6e7781", "#bf3989")


def _history_chart(shown: dict[str, Any] | None) -> dict[str, Any] | None:
    """Each candidate's metric across the last runs (oldest first) as a line with 95% whiskers; a ringed
    point where what produced it changed (its title says what)."""
    if not shown or len(shown["runs"]) < 2:
        return None
    width, height, left, bottom, top, right = 640, 260, 48, 30, 12, 150
    runs = shown["runs"]

    def x(i: int) -> float:
        return round(left + i / (len(runs) - 1) * (width - left - right), 1)

    def y(value: float) -> float:
        return round(top + (1 - max(0.0, min(1.0, value))) * (height - top - bottom), 1)

    lines = []
    for n, (name, points) in enumerate(shown["candidates"].items()):
        drawn = [(i, p) for i, p in enumerate(points) if p is not None]
        lines.append(
            {
                "name": name,
                "colour": PALETTE[n % len(PALETTE)],
                "points": " ".join(f"{x(i)},{y(p['value'])}" for i, p in drawn),
                "marks": [
                    {
                        "x": x(i),
                        "y": y(p["value"]),
                        "lo": y(p["ci95"][0]),
                        "hi": y(p["ci95"][1]),
                        "changed": bool(p["changed"]),
                        "title": f"{name} in {runs[i]}: {p['value']:.3f} (95% CI {p['ci95'][0]:.3f}-{p['ci95'][1]:.3f})"
                        + (f"; changed: {', '.join(p['changed'])}" if p["changed"] else ""),
                    }
                    for i, p in drawn
                ],
                "legend_y": top + 14 * n + 4,
            }
        )
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "top": top,
        "axis_y": height - bottom,
        "lines": lines,
        "y_ticks": [{"y": y(t / 4), "label": f"{t / 4:.2f}"} for t in range(5)],
        "runs": len(runs),
        "first": runs[0],
        "last": runs[-1],
    }


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("evalkit.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(record: RunRecord, rows: Iterable[dict[str, Any]], history: dict[str, Any] | None = None) -> str:
    """The page; ``history`` (evalkit.history.read_history) adds each suite's metric across the last runs."""
    return "".join(html_parts(record, rows, history))


def _compared(record: RunRecord, suite: str) -> dict[str, Any]:
    """A suite's `compare:` checks (each in words, a failed one with the rows that differ) and its paired
    table, for the page."""
    from evalkit.pairs import TABLE_HEADERS, check_line, table_rows, table_title
    from evalkit.report.view import FLIPS_SHOWN

    checks = [
        {
            "name": name,
            "reference": check.reference,
            "passed": check.passed,
            "line": check_line(name, check),
            "rows": check.disagreeing[:FLIPS_SHOWN],
        }
        for name, entry in record.suites.get(suite, {}).items()
        for check in entry.compared or []
    ]
    table = (record.pairs or {}).get(suite)
    pairs = None
    if table is not None:
        title = table_title(table)
        pairs = {"title": title, "headers": TABLE_HEADERS, "rows": table_rows(table)}
    return {"checks": checks, "pairs": pairs}


def html_parts(
    record: RunRecord, rows: Iterable[dict[str, Any]], history: dict[str, Any] | None = None
) -> Iterator[str]:
    """The page of :func:`render_html` in pieces, to be written one after another: the page around the
    examples' data, and that data a few hundred examples at a time (never the whole JSON as one string)."""
    import secrets

    view: RunView = build_view(record, rows)
    suites = []
    costs = record.costs
    currency = costs.prices.get("currency", "USD") if costs is not None else "USD"
    for suite in view.suites:
        suites.append(
            {
                "view": suite,
                "chart": _bar_chart(suite.candidates),
                "frontier": _frontier_chart(costs.suites.get(suite.name) if costs else None, currency),
                "history": _history_chart((history or {}).get(suite.name)),
                "curves": _adapter_curves(suite.candidates),
                "decisions": suite_lines(record, suite.name),
                **_compared(record, suite.name),
                "golden": golden_line(suite.name, reads) if (reads := (record.golden or {}).get(suite.name)) else None,
                "golden_over": bool(reads and reads.over_budget),
                "searches": [
                    _search_chart(c.name, c.entry.prompt_search)
                    for c in suite.candidates
                    if c.entry.prompt_search is not None
                ],
            }
        )
    tables = [(f"c{i}", c) for i, c in enumerate(c for s in view.suites for c in s.candidates)]
    mark = f"<!--evalkit-examples-{secrets.token_hex(16)}-->"  # where the data goes: in no text of the run
    page = (
        _environment()
        .get_template("report.html.j2")
        .render(
            view=view,
            suites=suites,
            example_tables={f"{c.suite}::{c.name}": key for key, c in tables},
            examples_json=mark,
            script=EXAMPLES_SCRIPT,
            script_hash=_script_hash(EXAMPLES_SCRIPT),
        )
    )
    head, _, tail = page.partition(mark)
    yield head
    yield from examples_json_parts(tables)
    yield tail


# The one script of the page: it pages and searches each candidate's examples, from data embedded once as
# JSON, and only ever writes text (textContent), never markup. It runs under a Content-Security-Policy that
# names its hash, so no other script can run; it removes the data and itself once read.
EXAMPLES_SCRIPT = """
(function () {
  var holder = document.getElementById("evalkit-examples");
  var data = JSON.parse(holder.textContent);
  holder.remove();
  var PAGE = 50;
  function cell(tr, text, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    var pre = document.createElement("pre");
    pre.textContent = text;
    td.appendChild(pre);
    tr.appendChild(td);
  }
  document.querySelectorAll("details.examples").forEach(function (box) {
    var rows = data[box.dataset.key] || [];
    var search = box.querySelector("input.search"), wrong = box.querySelector("input.wrong-only");
    var body = box.querySelector("tbody"), count = box.querySelector(".count");
    var prev = box.querySelector("button.prev"), next = box.querySelector("button.next");
    var shown = rows, page = 0;
    function draw() {
      var start = page * PAGE, rowsShown = shown.slice(start, start + PAGE);
      body.replaceChildren();
      rowsShown.forEach(function (r) {
        var tr = document.createElement("tr");
        tr.className = r[1] ? "right" : "wrong";
        cell(tr, r[0]);
        cell(tr, r[1] ? "right" : "wrong", r[1] ? "pass" : "fail");
        cell(tr, r[2], "output");
        cell(tr, r[3]);
        cell(tr, r[4]);
        body.appendChild(tr);
      });
      count.textContent = shown.length
        ? "examples " + (start + 1) + "-" + (start + rowsShown.length) + " of " + shown.length
        : "no example matches";
      prev.disabled = page === 0;
      next.disabled = start + PAGE >= shown.length;
    }
    function filter() {
      var q = search.value.toLowerCase();
      shown = rows.filter(function (r) {
        if (wrong.checked && r[1]) return false;
        if (!q) return true;
        if (r.text === undefined) r.text = [r[0], r[2], r[3], r[4]].join("\\n").toLowerCase();
        return r.text.indexOf(q) >= 0;
      });
      page = 0;
      draw();
    }
    search.addEventListener("input", filter);
    wrong.addEventListener("change", filter);
    prev.addEventListener("click", function () { page -= 1; draw(); });
    next.addEventListener("click", function () { page += 1; draw(); });
    box.querySelector(".tools").hidden = false;
    draw();
  });
  document.currentScript.remove();
})();
"""


def _script_hash(script: str) -> str:
    """The script's CSP source: 'sha256-<base64 of its SHA-256>'."""
    import base64
    import hashlib

    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")


EXAMPLES_PER_PART = 500  # examples per piece of the embedded data


def examples_json(tables: list[tuple[str, CandidateView]]) -> str:
    """Every candidate's examples as one JSON object (key -> rows of [id, right, output, expected, the
    prompt's end]), safe inside a <script> element: <, > and & are escaped, so no text can close it."""
    return "".join(examples_json_parts(tables))


def examples_json_parts(tables: list[tuple[str, CandidateView]]) -> Iterator[str]:
    """:func:`examples_json` in pieces of at most EXAMPLES_PER_PART examples, each made as it is read."""
    from evalkit.report.view import PROMPT_TAIL

    def tail(prompt: str) -> str:
        return prompt if len(prompt) <= PROMPT_TAIL else "…" + prompt[-PROMPT_TAIL:]

    def dumps(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

    def pieces(c: CandidateView) -> Iterator[str]:  # the examples of one candidate: "[...],[...]"
        part: list[list[Any]] = []
        for row in c.examples.values():
            part.append(
                [
                    str(row["id"]),
                    1 if row.get("correct") else 0,
                    str(row.get("output", "")),
                    _text(row.get("target")),
                    tail(str(row.get("prompt") or "")),
                ]
            )
            if len(part) == EXAMPLES_PER_PART:
                yield dumps(part)[1:-1]
                part = []
        if part:
            yield dumps(part)[1:-1]

    yield "{"
    for n, (key, c) in enumerate(tables):
        yield ("," if n else "") + dumps(key) + ":["
        for i, piece in enumerate(pieces(c)):
            yield ("," if i else "") + piece
        yield "]"
    yield "}"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

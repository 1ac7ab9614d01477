"""``report.html``: one self-contained page (no network, no scripts) for a run.

Rendered by Jinja2 with autoescaping, so model output always shows as text; a Content-Security-Policy
that allows no script is a second line of defence. Charts are inline SVG computed here.
"""

from __future__ import annotations

from typing import Any

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


def _training_curve(adapter: dict[str, Any] | None) -> dict[str, Any] | None:
    """The loss curve and validation accuracy of an adapter, as the run record keeps them, as SVG polylines."""
    record = adapter or {}
    losses = [(p["step"], p["loss"]) for p in record.get("loss_curve") or [] if p.get("loss") is not None]
    if len(losses) < 2:
        return None
    width, height, pad = 420, 160, 30
    max_step = max(s for s, _ in losses) or 1
    top = max(v for _, v in losses) or 1.0

    def point(step: float, value: float, scale: float) -> str:
        return (
            f"{pad + step / max_step * (width - 2 * pad):.1f},{height - pad - value / scale * (height - 2 * pad):.1f}"
        )

    validation = [v for v in record.get("validation") or [] if v.get("accuracy") is not None]
    return {
        "name": record.get("name", ""),
        "width": width,
        "height": height,
        "pad": pad,
        "loss": " ".join(point(s, v, top) for s, v in losses),
        "accuracy": " ".join(point(v["step"], v["accuracy"], 1.0) for v in validation),
        "max_loss": f"{top:.2f}",
        "steps": max_step,
        "epochs": [{"x": point(v["step"], 0, 1.0).split(",")[0], "label": f"{v['accuracy']:.2f}"} for v in validation],
    }


def _frontier_chart(economics: dict[str, Any] | None, currency: str) -> dict[str, Any] | None:
    """Accuracy (with its 95% interval) against cost per 1,000 requests, one point per candidate; the
    Pareto-optimal points filled and joined, cheapest first."""
    if not economics or not economics.get("candidates"):
        return None
    from evalkit.costs import break_even_text, money

    width, height, left, bottom, top, right = 640, 300, 56, 40, 14, 120
    candidates = economics["candidates"]
    most = max(c["per_1k_requests"] for c in candidates.values()) or 1.0

    def x(cost: float) -> float:
        return round(left + cost / (most * 1.1) * (width - left - right), 1)

    def y(accuracy: float) -> float:
        return round(top + (1 - max(0.0, min(1.0, accuracy))) * (height - top - bottom), 1)

    points = []
    for name, c in sorted(candidates.items(), key=lambda item: item[1]["per_1k_requests"]):
        lo, hi = c["ci95"]
        points.append(
            {
                "name": name,
                "x": x(c["per_1k_requests"]),
                "y": y(c["accuracy"]),
                "lo": y(lo),
                "hi": y(hi),
                "pareto": c["pareto_optimal"],
                "title": f"{name}: accuracy {c['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}), "
                f"{money(c['per_1k_requests'], currency)} per 1,000 requests"
                + (f", {money(c['training'], currency)} of training once" if c["training"] else ""),
            }
        )
    frontier = " ".join(f"{p['x']},{p['y']}" for p in points if p["pareto"])
    x_ticks = [{"x": x(most * 1.1 * t / 4), "label": money(most * 1.1 * t / 4, currency)} for t in range(5)]
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
        "break_even": [break_even_text(pair, currency) for pair in economics.get("break_even", [])],
    }


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


def render_html(record: dict[str, Any], rows: list[dict[str, Any]], history: dict[str, Any] | None = None) -> str:
    """The page; ``history`` (evalkit.history.read_history) adds each suite's metric across the last runs."""
    view: RunView = build_view(record, rows)
    suites = []
    costs = record.get("costs") or {}
    currency = (costs.get("prices") or {}).get("currency", "USD")
    for suite in view.suites:
        suites.append(
            {
                "view": suite,
                "chart": _bar_chart(suite.candidates),
                "frontier": _frontier_chart((costs.get("suites") or {}).get(suite.name), currency),
                "history": _history_chart((history or {}).get(suite.name)),
                "curves": [curve for c in suite.candidates if (curve := _training_curve(c.entry.get("adapter")))],
            }
        )
    return _environment().get_template("report.html.j2").render(view=view, suites=suites)

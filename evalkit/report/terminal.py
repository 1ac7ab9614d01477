"""What pytest prints: a failed candidate's explanation, and after the run one table per suite."""

from __future__ import annotations

from collections.abc import Iterable

from tabulate import tabulate

from evalkit.compare import format_p
from evalkit.costs import economics_lines
from evalkit.decision import suite_lines
from evalkit.golden import golden_line
from evalkit.latency import latency_line
from evalkit.pairs import TABLE_HEADERS, check_line, table_rows, table_title
from evalkit.record import RunRecord
from evalkit.report.judging import judge_lines
from evalkit.results import CandidateResult


def _metric_cell(result: CandidateResult, metric: str) -> str:
    if metric not in result.metrics:
        return "-"
    lo, hi = result.ci95[metric]
    return f"{result.metrics[metric]:.3f} [{lo:.2f}, {hi:.2f}]"


def _tokens(result: CandidateResult) -> str:
    cost = result.cost
    text = f"{cost['prompt_tokens_per_example']:.0f}"
    if result.tokens["output"]:
        text += f" + {cost['output_tokens_per_example']:.0f} out"
    return text


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.0f} kB"


def _params(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _training(result: CandidateResult) -> str:
    """Training cost of an adapter candidate: time, trainable parameters, adapter size."""
    cost = result.cost
    if "train_s" not in cost:
        return "-"
    return f"{cost['train_s']:.0f}s, {_params(cost['trainable_parameters'])} params, {_size(cost['adapter_bytes'])}"


def _baseline_cells(result: CandidateResult) -> list[str]:
    comparison = result.baseline
    if comparison is None:
        return ["-", "-"]
    gate = comparison.gate
    if gate is None:
        return [str(comparison.status), "-"]
    return [f"{-gate.drop:+.3f} ({gate.worse} worse, {gate.better} better)", format_p(gate.p_value)]


def _model_shown(result: CandidateResult, rows: list[CandidateResult]) -> str:
    """The model a run is on, as the table names it: its name, with its dtype where runs share the name."""
    others = {r.model_fingerprint for r in rows if r.model == result.model}
    if len(others) > 1 and ":" in (result.model_fingerprint or ""):
        return f"{result.model} ({result.model_fingerprint.rsplit(':', 1)[1]})"
    return str(result.model)


def _footer(rows: list[CandidateResult], record: RunRecord | None, verbose: bool = False) -> list[str]:
    """Below a suite's table: the `compare:` checks, what each candidate costs, the robustness search, the
    prompt-or-fine-tune lines and the golden set's reuse (from the run record, as summary.md and report.html
    say them), and the judge, where the suite has them; with ``verbose``, the paired table and latency."""
    suite = rows[0].suite
    lines = [check_line(r.candidate, check) for r in rows for check in r.compared or []]
    lines += [latency_line(r.candidate, r.latency) for r in rows if r.latency is not None and verbose]
    table = (record.pairs or {}).get(suite) if record is not None else None
    if verbose and table is not None:
        lines.append(table_title(table))
        lines += tabulate(
            table_rows(table), headers=TABLE_HEADERS, tablefmt="simple", disable_numparse=True
        ).splitlines()
    elif table is not None:
        n = len(table.pairs)
        lines.append(f"{n} paired test{'s' if n != 1 else ''} between the runs (-v shows them; summary.md has them)")
    if record is not None and record.costs is not None and suite in record.costs.suites:
        lines += economics_lines(record.costs.suites[suite], record.costs.prices["currency"])
    robust = [(r.candidate, r.robustness) for r in rows if r.robustness is not None]
    if robust:
        lines.append(
            "robustness (invariance: rows whose answer held under every perturbation; report.html shows the flips): "
            + "; ".join(
                f"{name} {rb.held} of {rb.examples} rows held, "
                f"{rb.tries} tries each, {rb.wall_s:.0f}s"
                f"{' (cached)' if rb.cached else ''}"
                for name, rb in robust
            )
        )
    if record is not None and suite in record.suites:
        lines += suite_lines(record, suite)
        if record.golden is not None and suite in record.golden:
            lines.append(golden_line(suite, record.golden[suite]))
    prices = record.costs.prices if record is not None and record.costs is not None else None
    return lines + judge_lines([(r.candidate, r.judge) for r in rows if r.judge is not None], prices)


def suite_tables(
    results: Iterable[CandidateResult], record: RunRecord | None = None, *, verbose: bool = False
) -> list[str]:
    """One table per suite; ``record`` (the run record) adds each suite's frontier and break-even, its
    searched prompts against the best adapter, how often its golden set has been read, and its paired tests
    (with ``verbose``)."""
    by_suite: dict[str, list[CandidateResult]] = {}
    for r in results:
        by_suite.setdefault(r.suite, []).append(r)
    tables = []
    for suite, rows in by_suite.items():
        metrics = list(dict.fromkeys(m for r in rows for m in r.metrics))  # invariance: robustness-tested only
        compared = any(r.baseline is not None for r in rows)
        models = list(dict.fromkeys(_model_shown(r, rows) for r in rows))
        headers = [
            "candidate",
            *(["model"] if len(models) > 1 else []),
            "n",
            *metrics,
            "threshold",
            *(["vs baseline", "p"] if compared else []),
            "verdict",
            "time",
            "tok/ex",
            "ms/ex",
            "training",
        ]
        body = []
        for r in rows:
            body.append(
                [
                    r.candidate,
                    *([_model_shown(r, rows)] if len(models) > 1 else []),
                    r.n,
                    *(_metric_cell(r, m) for m in metrics),
                    ", ".join(f"{m} {t}" for m, t in r.thresholds.items()) or "-",
                    *(_baseline_cells(r) if compared else []),
                    r.verdict.terminal(),
                    f"{r.wall_s:.1f}s",
                    _tokens(r),
                    f"{r.cost['ms_per_example']:.0f}",
                    _training(r),
                ]
            )
        on = f"model {models[0]}" if len(models) == 1 else f"{len(models)} models"
        title = (
            f"{suite} ({rows[0].task}, {on}; metric [95% CI]; tok/ex: prompt tokens per example;"
            " training: adapter training time, trainable parameters, size)"
        )
        if compared:
            title += (
                "\nvs baseline: change of the gated metric on the shared examples; p: exact McNemar test on the flips"
            )
        footer = "".join(f"\n{line}" for line in _footer(rows, record, verbose))
        tables.append(title + "\n" + tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True) + footer)
    return tables


def cache_lines(results: Iterable[CandidateResult], cache_dir, *, verbose: bool = False) -> list[str]:
    """How many requests the result cache answered; with ``verbose``, why each candidate's misses missed."""
    stats = [(r, r.cache) for r in results if r.cache is not None]
    judged = [r.judge.cache for r in results if r.judge is not None and r.judge.cache is not None]  # a judge's too
    hits = sum(cache.hits for _, cache in stats) + sum(cache.hits for cache in judged)
    misses = sum(cache.misses for _, cache in stats) + sum(cache.misses for cache in judged)
    total = hits + misses
    if cache_dir is None:
        lines = [f"result cache off (--evalkit-no-cache): {total} requests computed"]
    else:
        share = f" ({100 * hits / total:.0f}%)" if total else ""
        lines = [f"result cache {cache_dir}: {hits} of {total} requests answered from it{share}, {misses} computed"]
        if total and not misses:
            lines[0] += "; the model was not loaded"
    if verbose and cache_dir is not None:
        for r, cache in sorted(stats, key=lambda pair: (pair[0].suite, pair[0].candidate)):
            reasons = cache.miss_reasons
            if not reasons:
                continue
            why = "; ".join(
                f"{count} {reason} (first: {cache.first_miss.get(reason, '?')})" for reason, count in reasons.items()
            )
            lines.append(f"  {r.suite}::{r.candidate}: {cache.misses} missed: {why}")
    elif misses and cache_dir is not None:
        lines[0] += " (-v says why each missed)"
    return lines


def _outcome(value: float) -> str:
    return "right" if value >= 1 else "wrong" if value <= 0 else f"pass rate {value:.2f}"


def failure_text(r: CandidateResult, shown: int = 5) -> str:
    """Why a candidate failed: each failure, then the examples that flipped (or were wrong)."""
    lines = [f"{r.suite}::{r.candidate} failed ({r.n} examples):"]
    lines += [f"  {failure}" for failure in r.failures]
    comparison = r.baseline
    regressed = comparison is not None and comparison.regressed
    if comparison is not None and regressed and comparison.changes:
        lines.append(f"  since the baseline: {'; '.join(comparison.changes)}")
    worse = [f for f in comparison.flipped if f.direction == "worse"] if comparison is not None and regressed else []
    if worse:
        by_id = {e.id: e for e in r.examples}
        lines.append(
            f"first examples that got worse ({len(worse)} in all; every flip is in reports/latest/summary.md):"
        )
        for flip in worse[:shown]:
            e = by_id[str(flip.id)]
            lines.append(
                f"  {e.id}: {flip.baseline_output!r} -> {e.output!r} "
                f"({_outcome(flip.baseline)} -> {_outcome(flip.current)}), expected {e.target!r}"
            )
        return "\n".join(lines)
    wrong = [e for e in r.examples if not e.correct][:3]
    if wrong:
        lines.append("first wrong examples:")
        for e in wrong:
            verdict = e.details.get("judge")  # a judged example: what the judge said
            judged = f" (judged {verdict['grade']})" if verdict else ""
            lines.append(f"  {e.id}: predicted {e.output!r}, expected {e.target!r}{judged}")
    return "\n".join(lines)

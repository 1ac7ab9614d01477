"""Runs of one suite held against each other on the rows both answered.

- A `compare:` check with ``max_drop`` is a **non-inferiority** test on the paired differences
  ``d_i = candidate_i - reference_i`` of a per-example metric: H0 ``mean(d) <= -max_drop`` against H1
  ``mean(d) > -max_drop``, by the one-sided one-sample t-test (``scipy.stats.ttest_1samp``,
  ``alternative="greater"``). The check passes when the one-sided ``1 - alpha`` lower confidence bound of
  ``mean(d)`` lies above ``-max_drop`` (the same as p < alpha).
- With ``min_agreement`` / ``min_kappa`` it gates on **prediction agreement**: the share of rows whose
  predictions are equal (Wilson interval) and Cohen's kappa (bootstrap interval over rows).
- Every suite with several runs also gets a **paired table**: each pair's difference on its shared rows,
  the exact McNemar p on the rows only one of them got right, and that p adjusted for the family of pairs
  by Holm's step-down method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.compare import OUTPUT_CHARS, example_values, format_p
from evalkit.errors import EvalkitError
from evalkit.record import Disagreement, PairCheck, PairedTable, PairRow
from evalkit.stats import cohen_kappa, kappa_interval, mcnemar_exact, wilson_interval

if TYPE_CHECKING:
    from evalkit.results import CandidateResult, ExampleResult
    from evalkit.spec import CompareCheck

SHOWN_ROWS = 20  # disagreeing rows a check keeps
TABLE_METRIC = "accuracy"
_EPS = 1e-9


def shared_rows(candidate: CandidateResult, reference: CandidateResult) -> list[tuple[ExampleResult, ExampleResult]]:
    """The examples both runs answered, as (candidate's, reference's), in the candidate's order."""
    theirs = {e.id: e for e in reference.examples}
    return [(e, theirs[e.id]) for e in candidate.examples if e.id in theirs]


def non_inferiority(differences: Sequence[float], max_drop: float, alpha: float) -> tuple[float, float, float]:
    """(mean difference, its one-sided ``1 - alpha`` lower confidence bound, p) for H0 ``mean <= -max_drop``,
    by the one-sided one-sample t-test.

    Differences that do not vary give the t-test no spread. When no row differs, the bound is the exact
    (Clopper-Pearson) one on the share of rows that could be worse, ``scipy.stats.binomtest(0, n)``, and
    p is the chance of seeing no worse row if ``max_drop`` of them were: ``(1 - max_drop) ** n``. When every
    row differs by the same amount, that amount decides alone (p 0 above ``-max_drop``, else 1)."""
    from scipy import stats

    n = len(differences)
    mean = math.fsum(differences) / n
    if max(differences) - min(differences) <= _EPS:
        if abs(mean) > _EPS:
            return mean, mean, 0.0 if mean > -max_drop else 1.0
        worse = stats.binomtest(0, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").high
        return 0.0, -float(worse), float(stats.binomtest(0, n, max_drop, alternative="less").pvalue)
    test = stats.ttest_1samp(differences, popmean=-max_drop, alternative="greater")
    lower = float(test.confidence_interval(confidence_level=1 - alpha).low)
    return mean, lower, float(test.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values, in their given order: the k-th smallest is
    multiplied by (m - k + 1), kept at least the adjusted one before it, and at most 1."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for k, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _prediction(example: ExampleResult) -> str:
    """What a row predicted: the choice a choice scorer read from the text where it read one, else the
    output (a classify row's chosen label, a generate row's text)."""
    extracted = example.details.get("extracted") if example.details else None
    return str(extracted if extracted is not None else example.output).strip()


def _short(text: object) -> object:
    text = str(text)
    return text[:OUTPUT_CHARS] + "…" if len(text) > OUTPUT_CHARS else text


def check_pair(
    check: CompareCheck, candidate: CandidateResult, reference: CandidateResult, *, path: Path, line: int | None
) -> PairCheck:
    """``check`` of ``candidate`` against ``reference``; ``path`` and ``line`` (the suite file and the
    check's line) are named when the two share no rows."""
    rows = shared_rows(candidate, reference)
    if not rows:
        raise EvalkitError(
            f"compare: '{check.candidate}' and '{check.reference}' share no rows ({len(candidate.examples)} and "
            f"{len(reference.examples)} rows, no common id)",
            path=path,
            line=line,
            fix="compare runs of the same golden rows (a run limited with --evalkit-limit shares only its first rows)",
        )
    outcome = PairCheck(reference=check.reference, shared=len(rows), passed=True)
    failures: list[str] = []
    if check.max_drop is not None:
        failures += _non_inferiority(check, rows, outcome)
    if check.min_agreement is not None or check.min_kappa is not None:
        failures += _agreement(check, rows, outcome)
    outcome.failures, outcome.passed = failures, not failures
    return outcome


def _non_inferiority(check: CompareCheck, rows: list, outcome: PairCheck) -> list[str]:
    metric = check.metric
    pairs: list[tuple[Any, Any, float, float]] = []  # (candidate's example, reference's, their two values)
    for c, r in rows:
        a, b = example_values(c).get(metric), example_values(r).get(metric)
        if a is not None and b is not None:
            pairs.append((c, r, a, b))
    if not pairs:
        return [f"compare: no shared row has a value of {metric} for both '{check.candidate}' and '{check.reference}'"]
    max_drop = check.max_drop or 0.0
    mean, lower, p = non_inferiority([a - b for _, _, a, b in pairs], max_drop, check.alpha)
    n = len(pairs)
    outcome.metric, outcome.max_drop, outcome.alpha = metric, check.max_drop, check.alpha
    outcome.candidate_value = math.fsum(a for _, _, a, _ in pairs) / n
    outcome.reference_value = math.fsum(b for _, _, _, b in pairs) / n
    outcome.difference, outcome.lower_bound, outcome.p_value = mean, lower, p
    differing = sorted((x for x in pairs if abs(x[2] - x[3]) > _EPS), key=lambda x: x[2] - x[3])  # worse first
    outcome.disagreeing = [
        Disagreement(id=c.id, candidate=a, reference=b, output=_short(c.output), reference_output=_short(r.output))
        for c, r, a, b in differing[:SHOWN_ROWS]
    ]
    if lower > -max_drop:
        return []
    worse = sum(1 for _, _, a, b in pairs if a < b - _EPS)
    better = sum(1 for _, _, a, b in pairs if a > b + _EPS)
    shown = ", ".join(str(c.id) for c, _, a, b in differing[:5] if a < b)
    level = f"{1 - check.alpha:.0%}".replace(".0%", "%")
    return [
        f"{check.candidate} is not shown non-inferior to {check.reference} on {metric}: difference {mean:+.3f} on "
        f"{n} shared rows, one-sided {level} lower bound {lower:+.3f} is not above -{max_drop:g} "
        f"(p = {p:.3g}); {worse} rows worse, {better} better" + (f": {shown}" if shown else "")
    ]


def _agreement(check: CompareCheck, rows: list, outcome: PairCheck) -> list[str]:
    mine = [_prediction(c) for c, _ in rows]
    theirs = [_prediction(r) for _, r in rows]
    n = len(rows)
    agree = sum(a == b for a, b in zip(mine, theirs))
    rate = agree / n
    kappa = cohen_kappa(mine, theirs)
    outcome.agree, outcome.agreement = agree, rate
    outcome.agreement_ci95 = wilson_interval(agree, n)
    outcome.kappa, outcome.kappa_ci95 = kappa, kappa_interval(mine, theirs)
    outcome.min_agreement, outcome.min_kappa = check.min_agreement, check.min_kappa
    differing = [(c, r) for c, r in rows if _prediction(c) != _prediction(r)]
    if not outcome.disagreeing:
        outcome.disagreeing = [
            Disagreement(id=c.id, output=_short(c.output), reference_output=_short(r.output))
            for c, r in differing[:SHOWN_ROWS]
        ]
    low, high = outcome.agreement_ci95
    shown = ", ".join(str(c.id) for c, _ in differing[:5])
    failures = []
    if check.min_agreement is not None and rate < check.min_agreement:
        failures.append(
            f"{check.candidate} agrees with {check.reference} on {agree} of {n} shared rows ({rate:.3f} "
            f"[{low:.3f}, {high:.3f}]), below min_agreement {check.min_agreement:g}; differing rows: {shown}"
        )
    if check.min_kappa is not None and kappa < check.min_kappa:
        k_low, k_high = outcome.kappa_ci95
        failures.append(
            f"{check.candidate} and {check.reference} have Cohen's kappa {kappa:.3f} [{k_low:.3f}, {k_high:.3f}] on "
            f"{n} shared rows, below min_kappa {check.min_kappa:g}" + (f"; differing rows: {shown}" if shown else "")
        )
    return failures


# --------------------------------------------------------------------------- the paired table


def paired_tables(results: Iterable[CandidateResult]) -> dict[str, PairedTable]:
    """Per suite with at least two runs that report accuracy: every pair of runs on its shared rows (each
    run's per-example values read once)."""
    by_suite: dict[str, list[tuple[str, dict[str, float]]]] = {}
    for r in results:
        if TABLE_METRIC in r.metrics:
            values = {e.id: example_values(e)[TABLE_METRIC] for e in r.examples}
            by_suite.setdefault(r.suite, []).append((r.candidate, values))
    tables = {}
    for suite, runs in by_suite.items():
        rows = [row for a, b in combinations(runs, 2) if (row := _pair_row(a, b)) is not None]
        if not rows:
            continue
        for row, adjusted in zip(rows, holm([row.p_value for row in rows])):
            row.p_holm = adjusted
        tables[suite] = PairedTable(metric=TABLE_METRIC, pairs=rows)
    return tables


def _pair_row(first: tuple[str, dict[str, float]], second: tuple[str, dict[str, float]]) -> PairRow | None:
    """Two runs, each (name, value by example id), on the rows both answered."""
    (first_name, mine), (second_name, theirs) = first, second
    shared = [(value, theirs[i]) for i, value in mine.items() if i in theirs]
    if not shared:
        return None
    first_only = sum(1 for x, y in shared if x > y + _EPS)
    second_only = sum(1 for x, y in shared if y > x + _EPS)
    n = len(shared)
    a, b = math.fsum(x for x, _ in shared), math.fsum(y for _, y in shared)
    return PairRow(
        first=first_name,
        second=second_name,
        shared=n,
        first_value=a / n,
        second_value=b / n,
        difference=(a - b) / n,
        first_only=first_only,
        second_only=second_only,
        p_value=mcnemar_exact(first_only, second_only),
        p_holm=1.0,
    )


# --------------------------------------------------------------------------- in words


def check_line(candidate: str, check: PairCheck) -> str:
    """One `compare:` check in words, e.g. "few_shot@q4 vs few_shot: -0.010 on 60 rows, one-sided 95% lower
    bound -0.041 > -0.05 (p 0.012): non-inferior; agreement 0.967 [0.89, 0.99], kappa 0.95"."""
    parts = []
    if check.difference is not None and check.lower_bound is not None and check.max_drop is not None:
        level = f"{1 - (check.alpha or 0.05):.0%}"
        sign = ">" if check.lower_bound > -check.max_drop else "<="
        parts.append(
            f"{check.metric} {check.difference:+.3f}, one-sided {level} lower bound {check.lower_bound:+.3f} {sign} "
            f"-{check.max_drop:g} (p {format_p(check.p_value or 0.0)})"
        )
    if check.agreement is not None and check.agreement_ci95 is not None:
        low, high = check.agreement_ci95
        kappa = "" if check.kappa is None else f", kappa {check.kappa:.3f}"
        parts.append(
            f"agreement {check.agree} of {check.shared} ({check.agreement:.3f} [{low:.2f}, {high:.2f}]){kappa}"
        )
    verdict = "PASS" if check.passed else "FAIL"
    return f"{candidate} vs {check.reference} on {check.shared} shared rows: {'; '.join(parts)}: {verdict}"


def table_rows(table: PairedTable) -> list[list[str]]:
    """The paired table as text cells: pair, difference, rows only one got right, p, Holm p."""
    return [
        [
            f"{row.first} vs {row.second}",
            str(row.shared),
            f"{row.difference:+.3f}",
            f"{row.first_only} / {row.second_only}",
            format_p(row.p_value),
            format_p(row.p_holm) + (" *" if row.p_holm < 0.05 else ""),
        ]
        for row in table.pairs
    ]


TABLE_HEADERS = ["pair", "shared", "difference", "only first / only second right", "McNemar p", "Holm p"]


def table_title(table: PairedTable) -> str:
    """What the paired table shows, above it."""
    n = len(table.pairs)
    family = f"Holm-adjusted over the {n} pairs" if n > 1 else "one pair, so Holm's p is the same"
    return (
        f"paired tests ({table.metric} on the rows both runs answered; difference: first - second; "
        f"exact McNemar p, {family}; * below 0.05)"
    )

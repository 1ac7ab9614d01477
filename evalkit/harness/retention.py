"""What an adapter forgot: each standard suite of a `retention:` section evaluated on the base model and on
the base model with the adapter, and gated on the paired difference as the baseline gate is.

The base run is the standard suite's own first candidate without an adapter (its result is shared with the
suite's own test when both run in one session); the adapted run is that candidate with the adapter attached.
Both go through the result cache, so a warm run costs nothing until the adapter changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.compare import format_p, significant_drop
from evalkit.errors import SuiteError
from evalkit.pairs import shared_rows
from evalkit.record import RetentionCheck, RetentionFlip
from evalkit.stats import mcnemar_exact, paired_difference_interval

if TYPE_CHECKING:
    from evalkit.harness.settings import RetentionSettings
    from evalkit.results import CandidateResult
    from evalkit.runner import Resources
    from evalkit.spec import SuiteSpec
    from evalkit.train import TrainedAdapter

MAX_FLIPS = 20


def base_candidate(spec: SuiteSpec) -> str:
    """The standard suite's base run: its first candidate without an adapter."""
    for name, candidate in spec.candidates.items():
        if candidate.adapter is None:
            return name
    raise SuiteError(
        f"suite '{spec.name}' has no candidate without an adapter to compare an adapter with",
        path=spec.path,
        fix="add a candidate that runs the base model",
    )


def adapted_run(spec: SuiteSpec, base: str, adapter: str) -> tuple[SuiteSpec, str]:
    """``spec`` with one candidate: ``base`` with ``adapter`` attached, named ``base+adapter``."""
    name = f"{base}+{adapter}"
    candidate = spec.candidates[base].model_copy(update={"adapter": adapter})
    return spec.model_copy(update={"candidates": {name: candidate}}), name


def check_retention(
    owner: SuiteSpec,
    adapter: TrainedAdapter,
    settings: RetentionSettings,
    *,
    load: Callable[[Path], SuiteSpec],
    run_base: Callable[[SuiteSpec, str], CandidateResult],
    resources: Resources,
    limit: int | None = None,
) -> list[RetentionCheck]:
    """``adapter`` (of suite ``owner``) on each suite ``settings`` names, against the base model."""
    from evalkit.runner import evaluate_candidate

    with_adapter = dataclasses.replace(resources, adapter=lambda spec, name: adapter)
    checks = []
    for written in settings.suites:
        path = (owner.path.parent / written).resolve()
        if not path.is_file():
            raise SuiteError(
                f"retention names suite {written}, which does not exist",
                path=owner.path,
                fix="name a suite file relative to this suite",
            )
        spec = load(path)
        base_name = base_candidate(spec)
        base = run_base(spec, base_name)
        adapted_spec, name = adapted_run(spec, base_name, adapter.name)
        adapted = evaluate_candidate(adapted_spec, name, with_adapter, limit=limit)
        checks.append(paired_check(adapter.name, spec, base, adapted, settings))
    return checks


def paired_check(
    adapter: str, spec: SuiteSpec, base: CandidateResult, adapted: CandidateResult, settings: RetentionSettings
) -> RetentionCheck:
    """The paired change in accuracy from ``base`` to ``adapted`` on the rows both answered."""
    rows = [(b, a) for a, b in shared_rows(adapted, base)]
    both = sum(b.correct and a.correct for b, a in rows)
    worse = [(b, a) for b, a in rows if b.correct and not a.correct]
    better = sum(a.correct and not b.correct for b, a in rows)
    neither = len(rows) - both - len(worse) - better
    n = max(1, len(rows))
    base_value, adapted_value = (both + len(worse)) / n, (both + better) / n
    p_value = mcnemar_exact(len(worse), better)
    delta = adapted_value - base_value
    return RetentionCheck(
        adapter=adapter,
        suite=spec.name,
        suite_path=str(spec.path),
        base=base_value,
        adapted=adapted_value,
        delta=delta,
        ci95=paired_difference_interval(both, len(worse), better, neither),
        shared=len(rows),
        worse=len(worse),
        better=better,
        p_value=p_value,
        max_drop=settings.max_drop,
        alpha=settings.alpha,
        lost=significant_drop(-delta, p_value, settings.max_drop, settings.alpha),
        flips=[
            RetentionFlip(id=b.id, target=b.target, base_output=str(b.output)[:300], adapted_output=str(a.output)[:300])
            for b, a in worse[:MAX_FLIPS]
        ],
    )


def retention_line(check: RetentionCheck) -> str:
    """One standard suite's retention in words, as the reports show it."""
    lo, hi = check.ci95
    verdict = (
        f"LOST: more than max_drop {check.max_drop:g} with McNemar p < {check.alpha:g}"
        if check.lost
        else "no significant loss"
    )
    return (
        f"{check.adapter}: {check.delta:+.3f} [{lo:+.3f}, {hi:+.3f}] on {check.suite} "
        f"({check.base:.3f} -> {check.adapted:.3f} on {check.shared} shared rows; {check.worse} got worse, "
        f"{check.better} better; McNemar p = {format_p(check.p_value)}): {verdict}"
    )


def retention_failure(check: RetentionCheck) -> str:
    """A significant loss as the adapter's candidate fails with it, naming the first rows it forgot."""
    shown = ", ".join(f.id for f in check.flips[:5])
    more = f" and {check.worse - 5} more" if check.worse > 5 else ""
    return f"adapter {retention_line(check)}; rows it forgot: {shown}{more}"

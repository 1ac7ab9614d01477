"""The prompt-or-fine-tune decision in words: each suite's best prompt against its best adapter on the same
golden rows (:func:`evalkit.results.decisions` pairs them), what each searched prompt's dev score
promised against the one time the golden set read it (the optimism gap), and what each adapter forgot on
its standard suites (`retention:`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evalkit.record import CandidateEntry, Decision, DecisionSide, PromptSearchInfo, RunRecord


def _one_time(side: DecisionSide) -> str:
    parts = []
    if side.train_s is not None:
        parts.append(f"{side.train_s:.0f} s of training")
    if side.search_s is not None:
        parts.append(f"{side.search_s:.0f} s of prompt search")
    return " and ".join(parts) if parts else "no search"


def decision_line(decision: Decision) -> str:
    """The suite's best prompt against its best adapter, in one line."""
    from evalkit.compare import format_p

    p, a = decision.best_prompt, decision.best_adapter

    def shown(side: DecisionSide) -> str:
        lo, hi = side.ci95
        return f"{side.candidate} {side.accuracy:.3f} [{lo:.2f}, {hi:.2f}] ({_one_time(side)})"

    return (
        f"best prompt vs best adapter: {shown(p)} against {shown(a)}, on {decision.shared} shared rows: "
        f"{a.candidate} alone right on {decision.adapter_only_right}, {p.candidate} alone on "
        f"{decision.prompt_only_right}; exact McNemar p = {format_p(decision.p_value)}"
    )


HandWritten = tuple[str, float, tuple[float, float]]  # a candidate, its accuracy and 95% interval


def best_hand_written(candidates: Iterable[tuple[str, CandidateEntry]]) -> HandWritten | None:
    """The most accurate prompt the suite did not search or fine-tune: what a search has to beat."""
    hand = [
        (name, entry.metrics["accuracy"], entry.ci95["accuracy"])
        for name, entry in candidates
        if entry.prompt_search is None and entry.adapter is None and "accuracy" in entry.metrics
    ]
    return max(hand, key=lambda h: (h[1], h[0])) if hand else None


def search_line(candidate: str, search: PromptSearchInfo, hand: HandWritten | None = None) -> str:
    """A searched prompt: the best trial's dev score, the golden set's one read, and the gap between them;
    with ``hand``, what it bought over the best hand-written prompt (or that it bought nothing)."""
    optimism = search.optimism
    dev_lo, dev_hi = search.dev_ci95
    line = (
        f"prompt search of {candidate}: best of {search.trials} trials ({search.pruned} pruned) scored "
        f"{search.dev_accuracy:.3f} [{dev_lo:.2f}, {dev_hi:.2f}] on {search.dev_n} dev rows"
    )
    if optimism is not None:
        lo, hi = optimism.test_ci95
        gap_lo, gap_hi = optimism.gap_ci95
        line += (
            f", {optimism.test:.3f} [{lo:.2f}, {hi:.2f}] on the golden set: optimism gap "
            f"{optimism.gap:+.3f} [{gap_lo:+.2f}, {gap_hi:+.2f}]"
        )
    line += f"; {search.search_s:.0f} s of search, once" + (" (searched in this run)" if search.searched_now else "")
    if hand is not None and optimism is not None:
        name, accuracy, (lo, hi) = hand
        against = f"the best hand-written prompt, {name}, reads {accuracy:.3f} [{lo:.2f}, {hi:.2f}]"
        if optimism.test > accuracy:
            line += f"; {optimism.test - accuracy:+.3f} over {against}"
        else:
            line += f"; the search bought nothing on this suite: {against}"
    return line


def suite_lines(record: RunRecord, suite: str) -> list[str]:
    """A suite's prompt-or-fine-tune lines from a run record: each searched prompt's, then the best prompt
    against the best adapter (summary.md and report.html show these)."""
    candidates = record.suites[suite]
    hand = best_hand_written(candidates.items())
    lines = [
        search_line(name, entry.prompt_search, hand)
        for name, entry in candidates.items()
        if entry.prompt_search is not None
    ]
    decision = (record.decisions or {}).get(suite)
    return lines + ([decision_line(decision)] if decision is not None else []) + retention_lines(candidates.values())


def retention_lines(entries: Iterable[CandidateEntry]) -> list[str]:
    """What each adapter forgot on its standard suites, once per adapter and suite."""
    from evalkit.harness.retention import retention_line

    seen: dict[tuple[str, str], str] = {}
    for entry in entries:
        for check in entry.retention or []:
            seen.setdefault((check.adapter, check.suite_path), "retention of adapter " + retention_line(check))
    return list(seen.values())

"""The prompt-or-fine-tune decision in words: each suite's best prompt against its best adapter on the same
golden rows (:func:`evalkit.results.decisions` pairs them), and what each searched prompt's dev score
promised against the one time the golden set read it (the optimism gap)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evalkit.record import Decision, DecisionSide, PromptSearchInfo, RunRecord


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


def search_line(candidate: str, search: PromptSearchInfo) -> str:
    """A searched prompt: the best trial's dev score, the golden set's one read, and the gap between them."""
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
    return (
        line + f"; {search.search_s:.0f} s of search, once" + (" (searched in this run)" if search.searched_now else "")
    )


def suite_lines(record: RunRecord, suite: str) -> list[str]:
    """A suite's prompt-or-fine-tune lines from a run record: each searched prompt's, then the best prompt
    against the best adapter (summary.md and report.html show these)."""
    lines = [
        search_line(name, entry.prompt_search)
        for name, entry in record.suites[suite].items()
        if entry.prompt_search is not None
    ]
    decision = (record.decisions or {}).get(suite)
    return lines + ([decision_line(decision)] if decision is not None else [])

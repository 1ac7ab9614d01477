"""The prompt-or-fine-tune decision on equal footing: each suite's best prompt against its best adapter on
the same golden rows (their accuracies, the exact McNemar test on the rows only one of them got right,
and the one-time cost of each: training, and a prompt search), and what each searched prompt's dev score
promised against the one time the golden set read it (the optimism gap)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from evalkit.results import CandidateResult
from evalkit.stats import mcnemar_exact


def _side(result: CandidateResult) -> dict[str, Any]:
    side: dict[str, Any] = {
        "candidate": result.candidate,
        "accuracy": result.accuracy,
        "ci95": list(result.ci95["accuracy"]),
        "search_s": None if result.prompt_search is None else result.prompt_search["search_s"],
    }
    if result.adapter is not None:
        side["train_s"] = result.adapter["train_s"]
    return side


def _best(results: list[CandidateResult]) -> CandidateResult:
    return max(results, key=lambda r: (r.accuracy, r.candidate))


def decisions(results: Iterable[CandidateResult]) -> dict[str, dict[str, Any]]:
    """Per suite that has both a prompt-only candidate and an adapter candidate: the best of each (by
    accuracy) and the paired test between them on the rows both answered."""
    by_suite: dict[str, list[CandidateResult]] = {}
    for r in results:
        if "accuracy" in r.metrics:
            by_suite.setdefault(r.suite, []).append(r)
    found = {}
    for suite, rows in by_suite.items():
        prompts = [r for r in rows if r.adapter is None]
        adapters = [r for r in rows if r.adapter is not None]
        if not prompts or not adapters:
            continue
        prompt, adapter = _best(prompts), _best(adapters)
        right = {e.id: e.correct for e in prompt.examples}
        shared = [(right[e.id], e.correct) for e in adapter.examples if e.id in right]
        prompt_only = sum(p and not a for p, a in shared)
        adapter_only = sum(a and not p for p, a in shared)
        found[suite] = {
            "best_prompt": _side(prompt),
            "best_adapter": _side(adapter),
            "shared": len(shared),
            "prompt_only_right": prompt_only,
            "adapter_only_right": adapter_only,
            "p_value": mcnemar_exact(prompt_only, adapter_only),
        }
    return found


def _one_time(side: dict[str, Any]) -> str:
    parts = []
    if side.get("train_s") is not None:
        parts.append(f"{side['train_s']:.0f} s of training")
    if side.get("search_s") is not None:
        parts.append(f"{side['search_s']:.0f} s of prompt search")
    return " and ".join(parts) if parts else "no search"


def decision_line(decision: dict[str, Any]) -> str:
    """The suite's best prompt against its best adapter, in one line."""
    from evalkit.compare import format_p

    p, a = decision["best_prompt"], decision["best_adapter"]

    def shown(side: dict[str, Any]) -> str:
        lo, hi = side["ci95"]
        return f"{side['candidate']} {side['accuracy']:.3f} [{lo:.2f}, {hi:.2f}] ({_one_time(side)})"

    return (
        f"best prompt vs best adapter: {shown(p)} against {shown(a)}, on {decision['shared']} shared rows: "
        f"{a['candidate']} alone right on {decision['adapter_only_right']}, {p['candidate']} alone on "
        f"{decision['prompt_only_right']}; exact McNemar p = {format_p(decision['p_value'])}"
    )


def search_line(candidate: str, search: dict[str, Any]) -> str:
    """A searched prompt: the best trial's dev score, the golden set's one read, and the gap between them."""
    optimism = search.get("optimism") or {}
    dev_lo, dev_hi = search["dev_ci95"]
    line = (
        f"prompt search of {candidate}: best of {search['trials']} trials ({search['pruned']} pruned) scored "
        f"{search['dev_accuracy']:.3f} [{dev_lo:.2f}, {dev_hi:.2f}] on {search['dev_n']} dev rows"
    )
    if optimism:
        lo, hi = optimism["test_ci95"]
        gap_lo, gap_hi = optimism["gap_ci95"]
        line += (
            f", {optimism['test']:.3f} [{lo:.2f}, {hi:.2f}] on the golden set: optimism gap "
            f"{optimism['gap']:+.3f} [{gap_lo:+.2f}, {gap_hi:+.2f}]"
        )
    return (
        line
        + f"; {search['search_s']:.0f} s of search, once"
        + (" (searched in this run)" if search.get("searched_now") else "")
    )

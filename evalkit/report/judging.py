"""How the reports describe a model-graded scorer: who judged, how far its verdicts can be trusted (and why
a judge below its `min_agreement` is refused), and how pairwise comparisons came out. The terminal,
summary.md and report.html all say it in these words."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evalkit.costs import CostModel, money

if TYPE_CHECKING:
    from evalkit.record import Calibration, JudgeInfo

SHOWN_WRONG = 8  # calibration rows named when a judge is refused


def _interval(values: Any) -> str:
    lo, hi = values
    return f"[{lo:.2f}, {hi:.2f}]"


def judge_title(judge: JudgeInfo) -> str:
    """ "judge NAME (likelihood; grades C, I; pass C; rubric FILE)"."""
    names = ", ".join(j.name for j in judge.judges)
    grades = ", ".join(str(g) for g in judge.grades)
    how = judge.mode
    if how == "pairwise":
        how = f"pairwise against {(judge.pairwise or {}).get('against', '?')}, read by {judge.read}"
    elif how == "generate":
        how = "generate: the last GRADE it writes"
    rubric = f"; rubric {judge.rubric}" if judge.rubric else ""
    plural = "s" if len(judge.judges) > 1 else ""
    return f"judge{plural} {names} ({how}; grades {grades}; pass {judge.pass_grade}{rubric})"


def calibration_text(calibration: Calibration) -> str:
    """The judge's measured agreement with the human verdicts, and whether it may gate."""
    text = (
        f"agrees with the human verdicts of {calibration.file} on {calibration.agree} of {calibration.n} "
        f"rows: accuracy {calibration.accuracy:.3f} {_interval(calibration.accuracy_ci)}, Cohen's kappa "
        f"{calibration.kappa:.2f} {_interval(calibration.kappa_ci)}"
    )
    minimum = calibration.min_agreement
    if minimum is None:
        return text + " (no min_agreement: reported, not enforced)"
    if calibration.trusted:
        return text + f"; at least min_agreement {minimum:.2f}: trusted to gate"
    return text + f"; below min_agreement {minimum:.2f}: REFUSED, its verdicts gate nothing"


def refusal_text(calibration: Calibration) -> str:
    """Why a judge below its ``min_agreement`` may not gate a candidate: its measured agreement, the rows it
    got wrong, and what to do about it."""
    lo, hi = calibration.accuracy_ci
    k_lo, k_hi = calibration.kappa_ci
    wrong = calibration.wrong
    named = ", ".join(f"{w['row']} (human {w['human']}, judge {w['judge']})" for w in wrong[:SHOWN_WRONG])
    more = f" and {len(wrong) - SHOWN_WRONG} more" if len(wrong) > SHOWN_WRONG else ""
    return (
        f"the judge agrees with the human verdicts of {calibration.file} on {calibration.agree} of "
        f"{calibration.n} rows ({calibration.accuracy:.3f}, 95% CI {lo:.2f}-{hi:.2f}; Cohen's kappa "
        f"{calibration.kappa:.2f} [{k_lo:.2f}, {k_hi:.2f}]), below min_agreement "
        f"{calibration.min_agreement or 0:.2f}: its verdicts cannot gate this candidate. It got wrong: {named}{more}. "
        "Use a stronger judge model, sharpen the rubric, or grade with a scorer that needs no judge"
    )


def pairwise_text(candidate: str, judge: JudgeInfo) -> str | None:
    pairwise = judge.pairwise
    if not pairwise:
        return None
    text = (
        f"{candidate} vs {pairwise['against']}: {pairwise['wins']} wins, {pairwise['ties']} ties "
        f"({pairwise['position_ties']} where the verdict followed the position), {pairwise['losses']} losses"
    )
    if pairwise.get("not_compared"):
        text += f"; {pairwise['not_compared']} rows had no answer to compare with"
    return text


def agreement_texts(judge: JudgeInfo) -> list[str]:
    """With several judges: each pair's agreement, and each judge's own calibration."""
    lines = [
        f"{a} and {b} agree on {pair['agreement']:.3f} of the outputs (kappa {pair['kappa']:.2f})"
        for pair in judge.judges_agreement or []
        for a, b in [pair["judges"]]
    ]
    per_judge = judge.calibration.per_judge if judge.calibration is not None else None
    for one in per_judge or []:
        lines.append(
            f"{one['judge']} alone: accuracy {one['accuracy']:.3f} {_interval(one['accuracy_ci'])}, "
            f"kappa {one['kappa']:.2f} {_interval(one['kappa_ci'])}"
        )
    return lines


def folds_text(calibration: Calibration) -> str | None:
    """A judge calibrated by folds: the spread across them, and what the judge that gates is trained on."""
    folds = calibration.folds
    if folds is None:
        return None
    return (
        f"{folds.folds}-fold calibration: agreement {folds.accuracy_mean:.3f} ± {folds.accuracy_stdev:.3f} across "
        f"folds, kappa {folds.kappa_mean:.2f} ± {folds.kappa_stdev:.2f} (each fold graded by a judge trained "
        f"without it); the judge that gates is trained on all {folds.trained_on} rows"
    )


def _per_1k(ms: float | None, hour: float, currency: str) -> str:
    """What 1,000 judgements take at ``ms`` milliseconds each, in model time and at ``hour`` per hour."""
    if ms is None:
        return "-"
    seconds = ms  # 1,000 judgements of ms milliseconds each
    return f"{seconds:.1f} s, {money(seconds / 3600 * hour, currency)}"


def trained_judge_lines(calibration: Calibration, judge: str, prices: dict[str, Any] | None) -> list[str]:
    """A trained judge beside the same model prompted (without its adapter): the prompt-or-fine-tune
    question the candidates face, asked of the judge. Costs at ``prices`` (``[tool.evalkit.costs]`` as the
    run record keeps them; its defaults without)."""
    prompted = calibration.prompted
    if prompted is None or calibration.adapter is None:
        return []
    costs = CostModel.model_validate(prices or {})
    currency, hour = costs.currency, costs.hour_of(judge)
    trained_s = calibration.training_s
    training = (
        "-" if trained_s is None else f"{trained_s:.0f} s, {money(trained_s / 3600 * costs.training_price, currency)}"
    )
    rows = [("prompted", prompted, "-"), (f"trained ({calibration.adapter})", calibration, training)]
    lines = [f"the judge prompted and trained (adapter {calibration.adapter}), against the human verdicts:"]
    for name, measured, cost in rows:
        lines.append(
            f"  {name}: {measured.agree}/{measured.n} of {measured.file}, accuracy {measured.accuracy:.3f} "
            f"{_interval(measured.accuracy_ci)}, kappa {measured.kappa:.2f} {_interval(measured.kappa_ci)}; "
            f"training {cost}; 1,000 judgements {_per_1k(measured.ms_per_judgement, hour, currency)}"
        )
    return lines


def judge_lines(judged: list[tuple[str, JudgeInfo]], prices: dict[str, Any] | None = None) -> list[str]:
    """A suite's judge described in lines, from its candidates' (name, judge record) pairs; a trained
    judge's costs at ``prices`` (the run's ``[tool.evalkit.costs]``; its defaults without)."""
    if not judged:
        return []
    first = judged[0][1]
    lines = [judge_title(first)]
    if first.calibration is not None:
        lines.append("  calibration: " + calibration_text(first.calibration))
        if (folds := folds_text(first.calibration)) is not None:
            lines.append(f"  {folds}")
        lines += [f"  {line}" for line in trained_judge_lines(first.calibration, first.judges[0].name, prices)]
    lines += [f"  {text}" for text in agreement_texts(first)]
    lines += [f"  {text}" for name, judge in judged if (text := pairwise_text(name, judge))]
    caches = [judge.cache for _, judge in judged if judge.cache is not None]
    requests = sum(cache.hits + cache.misses for cache in caches)
    hits = sum(cache.hits for cache in caches)
    seconds = sum(judge.compute_s or 0.0 for _, judge in judged)
    lines.append(f"  judge requests: {requests}, {hits} from the result cache; judge model time {seconds:.1f}s")
    return lines

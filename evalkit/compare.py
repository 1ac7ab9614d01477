"""Compare a candidate's run with a reference run (the committed baseline, or another run record).

Both sides become a :class:`Snapshot`: metrics, the hashes of what produced them, and one
:class:`Outcome` per example keyed by the example's stable id. Only the examples both sides share are
compared, pairwise: the change in every metric with a 95% interval, the examples that flipped, and an
exact McNemar (sign) test on the flips, which gates a merge together with the suite's ``max_drop``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalkit.record import CandidateEntry, Comparison, PolicyInfo
from evalkit.stats import (
    _macro_f1_codes,
    macro_f1,
    mcnemar_exact,
    paired_bootstrap_interval,
    paired_difference_interval,
)

if TYPE_CHECKING:
    from evalkit.results import CandidateResult, ExampleResult

OUTPUT_CHARS = 300  # how much of a model output a baseline keeps for the report
_EPS = 1e-9


@dataclass(frozen=True)
class Policy:
    """When a change against the baseline fails the candidate (a suite's ``baseline:`` section)."""

    metric: str = "accuracy"
    max_drop: float = 0.0
    alpha: float = 0.05
    strict: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "max_drop": self.max_drop, "alpha": self.alpha, "strict": self.strict}


@dataclass(frozen=True)
class Outcome:
    """One example as a comparison sees it."""

    id: str
    values: dict[str, float]  # the example's value of each per-example metric (accuracy: 0/1, or pass rate)
    output: str
    target: Any = None


def example_values(example: ExampleResult | Mapping[str, Any]) -> dict[str, float]:
    """Per-example metric values of one result row (an ExampleResult or an examples.jsonl line);
    with repeats, accuracy is the pass rate."""
    row: Mapping[str, Any]
    if isinstance(example, Mapping):
        row = example
    else:  # an ExampleResult (slotted: no instance dict)
        row = {
            "pass_rate": example.pass_rate,
            "details": example.details,
            "correct": example.correct,
            "score": example.score,
        }
    pass_rate, details = row.get("pass_rate"), row.get("details") or {}
    values = {"accuracy": float(pass_rate if pass_rate is not None else row["correct"]), "score": float(row["score"])}
    if "correct_norm" in details:
        values["acc_norm"] = float(details["correct_norm"])
    for name, value in (details.get("metrics") or {}).items():  # an lm-eval document's own metrics
        values.setdefault(name, float(value))
    if "invariance" in details:  # only the rows the robustness search drew
        values["invariance"] = float(details["invariance"])
    return values


def _short(text: Any) -> Any:
    if isinstance(text, str) and len(text) > OUTPUT_CHARS:
        return text[:OUTPUT_CHARS] + "…"
    return text


@dataclass
class Snapshot:
    suite: str
    candidate: str
    task: str
    n: int
    metrics: dict[str, float]
    hashes: dict[str, str | None]  # dataset, template, model, adapter
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: CandidateResult) -> Snapshot:
        outcomes = {
            e.id: Outcome(e.id, example_values(e), _short(str(e.output)), _short(e.target)) for e in result.examples
        }
        return cls(
            result.suite, result.candidate, result.task, result.n, dict(result.metrics), result.hashes(), outcomes
        )

    @classmethod
    def from_record(
        cls, entry: Mapping[str, Any], examples: Iterable[Mapping[str, Any]], *, suite: str, candidate: str
    ) -> Snapshot:
        """From a candidate's entry in results.json and its rows of examples.jsonl (or a baseline entry)."""
        outcomes = {}
        for e in examples:
            values = e.get("values") or example_values(e)  # a baseline entry has them; examples.jsonl does not
            outcomes[str(e["id"])] = Outcome(
                str(e["id"]),
                {k: float(v) for k, v in values.items()},
                _short(str(e.get("output", ""))),
                _short(e.get("target")),
            )
        hashes = entry.get("hashes") or hashes_of(entry)
        return cls(
            suite,
            candidate,
            entry.get("task", ""),
            int(entry.get("n", len(outcomes))),
            {k: float(v) for k, v in entry["metrics"].items()},
            dict(hashes),
            outcomes,
        )

    @classmethod
    def from_entry(
        cls, entry: CandidateEntry, examples: Iterable[Mapping[str, Any]], *, suite: str, candidate: str
    ) -> Snapshot:
        """From a candidate's entry in a run record and its rows of examples.jsonl."""
        outcomes = {
            str(e["id"]): Outcome(
                str(e["id"]), example_values(e), _short(str(e.get("output", ""))), _short(e.get("target"))
            )
            for e in examples
        }
        return cls(suite, candidate, entry.task, entry.n, dict(entry.metrics), entry.hashes(), outcomes)

    def baseline_entry(self) -> dict[str, Any]:
        """What ``reports/baseline.json`` keeps of this candidate."""
        return {
            "task": self.task,
            "n": self.n,
            "metrics": self.metrics,
            "hashes": self.hashes,
            "examples": [
                {"id": o.id, "values": o.values, "output": o.output, "target": o.target} for o in self.outcomes.values()
            ],
        }


def hashes_of(entry: Mapping[str, Any]) -> dict[str, str | None]:
    """The hashes that identify what produced a candidate's result, from its entry in a results.json read
    from disk (:meth:`evalkit.record.CandidateEntry.hashes` for one in memory)."""
    adapter = entry.get("adapter") or {}
    judge = entry.get("judge") or {}
    hashes = {
        "dataset": entry.get("dataset_hash"),
        "template": entry.get("template_sha256"),
        "prompts": entry.get("prompts_sha256"),
        "model": entry.get("model_fingerprint"),
        "adapter": adapter.get("content_hash"),
    }
    if entry.get("task_sha256"):  # older records did not hash the task's settings
        hashes["task"] = entry["task_sha256"]
    if judge.get("sha256"):  # only model-graded suites name a judge (older baselines have no such key)
        hashes["judge"] = judge["sha256"]
    return hashes


HASH_NAMES = {
    "dataset": "dataset",
    "template": "prompt template",
    "model": "model",
    "adapter": "adapter",
    "judge": "judge (rubric, grades, reading or judge model)",
    "task": "task settings (decoding, scorer, choices)",
    "prompts": "rendered prompts",
}


def _what_changed(reference: Snapshot, current: Snapshot) -> list[str]:
    changes: list[str] = []
    for key, label in HASH_NAMES.items():
        old, new = reference.hashes.get(key), current.hashes.get(key)
        if old == new or (key == "prompts" and (changes or old is None)) or (key == "task" and old is None):
            continue  # a changed template or dataset explains changed prompts, say so once; a record written
            # before the task's settings were hashed has none to compare
        if key == "prompts":
            changes.append(
                "rendered prompts changed with the same template and data (few-shot examples, chat "
                f"format or system message; {str(old)[:12]} -> {str(new)[:12]})"
            )
            continue
        if old is None:
            changes.append(f"{label} added ({str(new)[:12]})")
        elif new is None:
            changes.append(f"{label} removed (was {str(old)[:12]})")
        else:
            changes.append(f"{label} changed ({str(old)[:12]} -> {str(new)[:12]})")
    return changes


def _metric_on(metric: str, outcomes: list[Outcome]) -> float | None:
    if not outcomes:
        return None
    if metric == "macro_f1":
        return macro_f1([str(o.target) for o in outcomes], [o.output for o in outcomes])
    if all(metric in o.values for o in outcomes):
        return sum(o.values[metric] for o in outcomes) / len(outcomes)
    return None


def _per_example(metric: str, outcomes: list[Outcome]) -> bool:
    """Whether ``metric`` is a mean of one value per example (examples carry their values of such metrics)."""
    return any(metric in o.values for o in outcomes)


def _delta_interval(metric: str, ref: list[Outcome], cur: list[Outcome]) -> tuple[float, float]:
    n = len(ref)
    if _per_example(metric, ref):
        a = [o.values[metric] for o in ref]
        b = [o.values[metric] for o in cur]
        if all(v in (0.0, 1.0) for v in a + b):
            both = sum(1 for x, y in zip(a, b) if x and y)
            only_ref = sum(1 for x, y in zip(a, b) if x and not y)
            only_cur = sum(1 for x, y in zip(a, b) if y and not x)
            return paired_difference_interval(both, only_ref, only_cur, n - both - only_ref - only_cur)
        return paired_bootstrap_interval(lambda idx: sum(b[i] - a[i] for i in idx) / n, n)
    if metric == "macro_f1":  # labels coded once, so each resample is a few array operations
        import numpy as np

        texts = [str(o.target) for o in ref] + [o.output for o in ref] + [o.output for o in cur]
        labels = {label: i for i, label in enumerate(sorted(set(texts), key=repr))}
        gold, before, after = (
            np.array([labels[t] for t in texts[k * n : (k + 1) * n]], dtype=np.int64) for k in range(3)
        )
        return paired_bootstrap_interval(
            lambda idx: (
                _macro_f1_codes(gold[idx], after[idx], len(labels))
                - _macro_f1_codes(gold[idx], before[idx], len(labels))
            ),
            n,
        )
    return paired_bootstrap_interval(
        lambda idx: (
            (_metric_on(metric, [cur[i] for i in idx]) or 0.0) - (_metric_on(metric, [ref[i] for i in idx]) or 0.0)
        ),
        n,
    )


def _metric_changes(current: Snapshot, reference: Snapshot, ref: list[Outcome], cur: list[Outcome]) -> dict[str, Any]:
    """Each metric before and after on the shared examples, with the 95% interval of its change."""
    metrics: dict[str, Any] = {}
    for metric in current.metrics:
        pairs = list(zip(ref, cur))
        if _per_example(metric, ref):  # invariance exists only on the rows the robustness search drew
            pairs = [(r, c) for r, c in pairs if metric in r.values and metric in c.values]
        if not pairs:
            continue
        ref_m, cur_m = [r for r, _ in pairs], [c for _, c in pairs]
        before, after = _metric_on(metric, ref_m), _metric_on(metric, cur_m)
        if before is None or after is None:
            continue
        lo, hi = _delta_interval(metric, ref_m, cur_m)
        metrics[metric] = {
            "baseline": before,
            "current": after,
            "delta": after - before,
            "ci95": [lo, hi],
            "baseline_all": reference.metrics.get(metric),
            "examples": len(pairs),
        }
    return metrics


def _flips(ref: list[Outcome], cur: list[Outcome], gated: str) -> list[dict[str, Any]]:
    """The examples whose gated metric changed, the ones that got worse first."""
    flipped = []
    for r, c in zip(ref, cur):
        before, after = r.values.get(gated), c.values.get(gated)
        if before is None or after is None or abs(after - before) <= _EPS:
            continue
        flipped.append(
            {
                "id": r.id,
                "direction": "worse" if after < before else "better",
                "baseline": before,
                "current": after,
                "baseline_output": r.output,
            }
        )
    flipped.sort(key=lambda f: f["direction"] != "worse")
    return flipped


def _label_changes(task: str, ref: list[Outcome], cur: list[Outcome]) -> list[dict[str, Any]] | None:
    """What the task kind adds about the shared examples (a classifier: each gold label's changed recall);
    None for a kind that adds nothing, or that is not installed here."""
    from evalkit.errors import EvalkitError
    from evalkit.tasks import TASK_KINDS

    if task not in TASK_KINDS:
        return None
    try:
        kind = TASK_KINDS.get(task)
    except EvalkitError:  # a broken package's kind: the comparison itself does not need it
        return None
    return kind.label_changes(ref, cur)


def compare(current: Snapshot, reference: Snapshot | None, policy: Policy) -> Comparison:
    """The comparison of ``current`` with ``reference`` (its fields: docs/baselines.md)."""
    if reference is None:
        return Comparison(
            status="new",
            regressed=False,
            policy=PolicyInfo(**policy.as_dict()),
            reason="no baseline entry for this candidate yet",
        )
    shared_ids = [i for i in current.outcomes if i in reference.outcomes]
    comparison = Comparison(
        policy=PolicyInfo(**policy.as_dict()),
        changes=_what_changed(reference, current),
        shared=len(shared_ids),
        only_current=len(current.outcomes) - len(shared_ids),
        only_baseline=len(reference.outcomes) - len(shared_ids),
        regressed=False,
    )
    if not shared_ids:
        return _updated(
            comparison,
            status="no shared examples",
            metrics={},
            flipped=[],
            reason="the run and the baseline share no example ids, so nothing can be compared",
        )
    ref = [reference.outcomes[i] for i in shared_ids]
    cur = [current.outcomes[i] for i in shared_ids]

    metrics = _metric_changes(current, reference, ref, cur)
    gated = policy.metric
    flipped = _flips(ref, cur, gated)
    worse = sum(f["direction"] == "worse" for f in flipped)
    better = len(flipped) - worse
    p_value = mcnemar_exact(worse, better)
    found: dict[str, Any] = {"metrics": metrics, "flipped": flipped}
    labels = _label_changes(current.task, ref, cur)
    if labels is not None:
        found["labels"] = labels
    if gated not in metrics:
        return _updated(comparison, **found, status="not compared", reason=f"metric '{gated}' is missing on one side")
    change = metrics[gated]
    gate = {"metric": gated, "drop": -change["delta"], "p_value": p_value, "worse": worse, "better": better}
    status, reason = _decide(policy, change, p_value, worse, better)
    return _updated(comparison, **found, gate=gate, status=status, regressed=status == "regressed", reason=reason)


def _updated(comparison: Comparison, **fields: Any) -> Comparison:
    """``comparison`` with ``fields`` set (validated into their models, and marked as set)."""
    return Comparison.model_validate({**comparison.model_dump(exclude_unset=True), **fields})


def significant_drop(drop: float, p_value: float, max_drop: float, alpha: float) -> bool:
    """The gate's rule: a drop larger than ``max_drop`` that McNemar's test finds significant (p < ``alpha``).
    The baseline gate and an adapter's retention check both decide by it."""
    return drop > max_drop + _EPS and p_value < alpha


def _decide(policy: Policy, change: dict[str, Any], p_value: float, worse: int, better: int) -> tuple[str, str]:
    """The status of a candidate's change in the gated metric, and the sentence that explains it."""
    gated, delta = policy.metric, change["delta"]
    drop = -delta
    lo, hi = change["ci95"]
    evidence = (
        f"{change['baseline']:.3f} -> {change['current']:.3f} on {change['examples']} shared examples "
        f"(95% CI of the change {lo:+.3f} to {hi:+.3f}); {worse} got worse, {better} better"
    )
    p_text = f"McNemar p = {format_p(p_value)}"
    if policy.strict and drop > _EPS:
        return "regressed", f"{gated} dropped {drop:.3f} and the suite is strict ({p_text}): {evidence}"
    if significant_drop(drop, p_value, policy.max_drop, policy.alpha):
        return "regressed", (
            f"{gated} dropped {drop:.3f} (more than max_drop {policy.max_drop:g}) and "
            f"{p_text} < alpha {policy.alpha:g}: {evidence}"
        )
    if delta > _EPS and p_value < policy.alpha:
        return "improved", f"{gated} rose {delta:.3f} ({p_text}): {evidence}"
    if drop > _EPS:
        why = (
            f"{p_text}, not below alpha {policy.alpha:g}"
            if p_value >= policy.alpha
            else f"within max_drop {policy.max_drop:g}"
        )
        return "within noise", f"{gated} dropped {drop:.3f}, {why}: {evidence}"
    return "no significant change", f"{gated} {evidence}; {p_text}"


def format_p(p: float) -> str:
    """A p-value as the reports print it: three decimals, or two significant digits below 0.001."""
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"

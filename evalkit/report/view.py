"""What every report shows, computed once from a run record: the markdown summary and the HTML report
render this, so they always agree."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from evalkit.compare import format_p
from evalkit.record import (
    ByPosition,
    Calibration,
    CandidateEntry,
    Comparison,
    Confusion,
    Gate,
    JudgeInfo,
    MetricChange,
    Robustness,
    RunInfo,
    RunRecord,
)
from evalkit.results import ExampleRows, rows_by_candidate
from evalkit.verdict import Verdict

FLIPS_SHOWN = 5  # flipped examples per candidate in summary.md (report.html shows them all)
PROMPT_TAIL = 240  # characters of a prompt shown before "full prompt" (few-shot prefixes repeat)


@dataclass
class CandidateView:
    suite: str
    name: str
    entry: CandidateEntry  # the candidate's entry in the run record
    metric: str  # the metric gated against the baseline (accuracy unless the suite says otherwise)
    examples: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # example rows by id

    @property
    def comparison(self) -> Comparison | None:
        return self.entry.baseline

    @property
    def passed(self) -> bool:
        return self.entry.passed if self.entry.passed is not None else not self.entry.failures

    @property
    def expected_failure(self) -> str | None:
        """The reason of the candidate's xfail marker, if it has one."""
        return self.entry.expected_failure

    @property
    def outcome(self) -> str:
        """pass, fail, or xfail (failed as its xfail marker expects): what colours its verdict."""
        if self.passed:
            return "pass"
        return "xfail" if self.expected_failure is not None else "fail"

    def value(self, metric: str | None = None) -> float:
        return self.entry.metrics[metric or self.metric]

    def interval(self, metric: str | None = None) -> tuple[float, float]:
        lo, hi = self.entry.ci95[metric or self.metric]
        return lo, hi

    def metric_cell(self, metric: str | None = None) -> str:
        if (metric or self.metric) not in self.entry.metrics:
            return "-"
        lo, hi = self.interval(metric)
        return f"{self.value(metric):.3f} [{lo:.2f}, {hi:.2f}]"

    @property
    def metric_change(self) -> MetricChange | None:
        """The gated metric's change since the baseline, on the shared examples (None: not compared)."""
        return self.comparison.metrics.get(self.metric) if self.comparison is not None else None

    @property
    def baseline_value(self) -> float | None:
        change = self.metric_change
        return None if change is None else change.baseline

    @property
    def baseline_cell(self) -> str:
        value = self.baseline_value
        return "-" if value is None else f"{value:.3f}"

    @property
    def change_cell(self) -> str:
        change = self.metric_change
        if change is None:
            return "-"
        lo, hi = change.ci95
        return f"{change.delta:+.3f} [{lo:+.2f}, {hi:+.2f}]"

    @property
    def gate(self) -> Gate | None:
        return self.comparison.gate if self.comparison is not None else None

    @property
    def p_cell(self) -> str:
        return "-" if self.gate is None else format_p(self.gate.p_value)

    @property
    def status(self) -> str:
        """The comparison's status, or why there is none."""
        c = self.comparison
        return "no baseline" if c is None else c.status or ""

    @property
    def verdict(self) -> str:
        """pass or fail, with what decided it."""
        return Verdict.of(self.entry).summary()

    @property
    def flips(self) -> list[dict[str, Any]]:
        """Flipped examples, the worse ones first, with the current row's prompt, output and target."""
        out = []
        for flip in self.comparison.flipped if self.comparison is not None else []:
            row = self.examples.get(str(flip.id), {})
            prompt = row.get("prompt", "")
            tail = prompt if len(prompt) <= PROMPT_TAIL else "…" + prompt[-PROMPT_TAIL:]
            out.append(
                {
                    **flip.model_dump(mode="json"),
                    "prompt": prompt,
                    "prompt_tail": tail,
                    "output": row.get("output", ""),
                    "target": row.get("target"),
                }
            )
        return out

    @property
    def flip_counts(self) -> tuple[int, int]:
        return (0, 0) if self.gate is None else (self.gate.worse, self.gate.better)

    @property
    def flaky(self) -> list[dict[str, Any]]:
        """With repeats: examples whose outcome varied between repeats."""
        return [row for row in self.examples.values() if (row.get("details") or {}).get("flaky")]

    @property
    def cost(self) -> dict[str, float]:
        return self.entry.cost

    @property
    def robustness(self) -> Robustness | None:
        return self.entry.robustness

    @property
    def judge(self) -> JudgeInfo | None:
        return self.entry.judge

    @property
    def confusion(self) -> Confusion | None:
        """A classifier's confusion matrix and per-label precision and recall (None for other kinds)."""
        return self.entry.errors.confusion if self.entry.errors is not None else None

    @property
    def by_position(self) -> ByPosition | None:
        """For choices that come with each row: accuracy by the gold answer's position, and how often each
        position was chosen (None for a fixed label set, which has its confusion matrix)."""
        return self.entry.errors.by_position if self.entry.errors is not None else None

    @property
    def wrong_count(self) -> int:
        return sum(not row.get("correct") for row in self.examples.values())

    @property
    def failure_shapes(self) -> dict[str, int] | None:
        """A generator's wrong answers by shape: empty, over-long, wrong format, wrong value."""
        return self.entry.errors.failure_shapes if self.entry.errors is not None else None

    @property
    def label_changes(self) -> list[str]:
        """The labels whose recall changed since the baseline, in words, most lost first."""
        labels = (self.comparison.labels if self.comparison is not None else None) or []
        return [
            f"{change.label} recall {change.baseline:.2f} -> {change.current:.2f} "
            f"({change.delta:+.2f}, {change.examples} examples)"
            for change in labels
        ]

    @property
    def judged(self) -> list[dict[str, Any]]:
        """Each example with the judge's verdict on it: grade, probability, the prompt's tail, its answer."""
        out = []
        for row in self.examples.values():
            verdict = (row.get("details") or {}).get("judge")
            if verdict is not None:
                out.append(
                    {
                        "id": row["id"],
                        "output": row.get("output", ""),
                        "correct": row.get("correct"),
                        "said": _what_the_judge_said(verdict),
                        **verdict,
                    }
                )
        return out

    @property
    def robustness_flips(self) -> list[dict[str, Any]]:
        """Each row whose answer a perturbation changed, with the changed input marked character by character."""
        out = []
        for flip in self.robustness.flipped if self.robustness is not None else []:
            if flip.perturbed_choices:
                before, after = ", ".join(flip.choices or []), ", ".join(flip.perturbed_choices)
            else:
                name = next(iter(flip.perturbed), None)
                before, after = (flip.original.get(name, ""), flip.perturbed[name]) if name else ("", "")
            shown = flip.model_dump(mode="json")
            out.append(
                {**shown, "input_before": before, "input_after": after, "marked": marked_segments(before, after)}
            )
        return out


def _what_the_judge_said(verdict: dict[str, Any]) -> str:
    """The judge's own answer: what it wrote, each grade's probability, or its grades in the two orders."""
    if verdict.get("answer"):
        return str(verdict["answer"])
    if verdict.get("probabilities"):
        return ", ".join(f"{grade} {p:.2f}" for grade, p in verdict["probabilities"].items())
    return " / ".join(str(g) for g in verdict.get("orders") or [])


def marked_segments(before: str, after: str) -> list[tuple[str, bool]]:
    """``after`` as (text, changed) runs against ``before``: what a perturbation inserted or replaced."""
    import difflib

    segments: list[tuple[str, bool]] = []
    for op, _, _, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if j2 > j1:
            segments.append((after[j1:j2], op != "equal"))
        elif op == "delete":
            segments.append(("␡", True))  # a deletion: show where something was removed
    return segments


@dataclass
class SuiteView:
    name: str
    task: str
    n: int
    metrics: list[str]
    candidates: list[CandidateView]
    prices: dict[str, Any] | None = None  # the run's [tool.evalkit.costs], when it was priced

    @property
    def judge_lines(self) -> list[str]:
        """The suite's judge, described (empty when no model grades it)."""
        from evalkit.report.judging import judge_lines

        return judge_lines([(c.name, c.judge) for c in self.candidates if c.judge], self.prices)

    @property
    def calibration(self) -> Calibration | None:
        return next((c.judge.calibration for c in self.candidates if c.judge is not None), None)


@dataclass
class RunView:
    record: RunRecord
    suites: list[SuiteView]

    @property
    def run(self) -> RunInfo:
        return self.record.run

    @property
    def failed(self) -> list[CandidateView]:
        """The candidates that failed and were not expected to (an xfail marker's are not)."""
        return [c for s in self.suites for c in s.candidates if c.outcome == "fail"]

    @property
    def expected_failures(self) -> list[CandidateView]:
        """The candidates that failed as their xfail marker says they will."""
        return [c for s in self.suites for c in s.candidates if c.outcome == "xfail"]

    @property
    def headline(self) -> str:
        """The run in one sentence, counted as pytest counts it: failures, expected failures, passes."""
        failed, expected = self.failed, self.expected_failures
        passed = self.total - len(failed) - len(expected)
        if failed:
            text = f"{len(failed)} of {self.total} candidates failed: " + ", ".join(
                f"{c.suite}::{c.name}" for c in failed
            )
            return text + (f"; {len(expected)} failed as expected" if expected else "")
        if expected:
            reasons = "; ".join(f"{c.suite}::{c.name}: {c.expected_failure}" for c in expected)
            return f"{passed} of {self.total} candidates passed; {len(expected)} failed as expected ({reasons})"
        return f"All {self.total} candidates passed."

    @property
    def total(self) -> int:
        return sum(len(s.candidates) for s in self.suites)

    @property
    def title(self) -> str:
        return f"evalkit run {self.run.run_id or ''}".strip()

    @property
    def facts(self) -> list[str]:
        run = self.run
        facts = []
        if run.git_commit:
            facts.append(f"commit {run.git_commit[:10]}")
        if run.started:
            facts.append(f"started {run.started}")
        models = ", ".join(dict.fromkeys(m.name for m in run.models))  # adapters share a name
        if models:
            facts.append(f"model {models}")
        baseline = run.baseline
        if baseline is not None and baseline.updated:
            facts.append(f"baseline {baseline.path} updated from this run")
        elif baseline is not None and baseline.path:
            facts.append(f"baseline {baseline.path}")
        if run.row_limit:
            facts.append(f"first {run.row_limit} rows per suite only")
        return facts


def build_view(record: RunRecord, rows: Iterable[dict[str, Any]]) -> RunView:
    by_candidate: Mapping[tuple[str, str], Mapping[str, dict[str, Any]]]
    if isinstance(rows, ExampleRows):  # in memory: each row made when read
        by_candidate = rows.by_candidate()
    else:
        by_candidate = {key: {str(row["id"]): row for row in group} for key, group in rows_by_candidate(rows).items()}
    suites = []
    for suite, candidates in record.suites.items():
        views = []
        for name, entry in candidates.items():
            policy = entry.baseline.policy if entry.baseline is not None else None
            metric = policy.metric if policy is not None else "accuracy"
            views.append(CandidateView(suite, name, entry, metric, by_candidate.get((suite, name), {})))
        first = next(iter(candidates.values()))
        metrics = list(dict.fromkeys(m for entry in candidates.values() for m in entry.metrics))
        prices = record.costs.prices if record.costs is not None else None
        suites.append(SuiteView(suite, first.task, first.n, metrics, views, prices))
    return RunView(record, suites)

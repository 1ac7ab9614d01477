"""Hand-built run records with known flips, for the comparison, report and diff tests."""

from __future__ import annotations

from pathlib import Path

from evalkit.recorder import with_pairs
from evalkit.report.writer import write_run
from evalkit.results import CandidateResult, ExampleResult, build_record, example_rows
from evalkit.stats import wilson_interval

LABELS = ["billing", "technical", "account", "shipping", "other"]


def candidate_result(
    correct: list[bool],
    *,
    candidate: str = "few_shot",
    suite: str = "tickets",
    ids: list[str] | None = None,
    template: str = "t" * 64,
    dataset: str = "d" * 64,
    outputs: list[str] | None = None,
    failures: list[str] | None = None,
) -> CandidateResult:
    """A classify result whose example i is correct when ``correct[i]``; the gold label cycles LABELS."""
    ids = ids or [f"t-{i:03d}" for i in range(len(correct))]
    examples = []
    for i, (example_id, ok) in enumerate(zip(ids, correct)):
        gold = LABELS[i % len(LABELS)]
        output = outputs[i] if outputs else (gold if ok else LABELS[(i + 1) % len(LABELS)])
        examples.append(
            ExampleResult(
                id=example_id,
                row=i + 1,
                prompt=f"Ticket {example_id}\nCategory:",
                output=output,
                target=gold,
                correct=ok,
                score=float(ok),
                details={"correct_norm": ok, "prediction_norm": output},
            )
        )
    n = len(examples)
    hits = sum(correct)
    return CandidateResult(
        suite=suite,
        candidate=candidate,
        suite_path="/project/suites/tickets.eval.yaml",
        task="classify",
        n=n,
        metrics={"accuracy": hits / n, "acc_norm": hits / n},
        ci95={"accuracy": wilson_interval(hits, n), "acc_norm": wilson_interval(hits, n)},
        thresholds={},
        failures=list(failures or []),
        wall_s=1.5,
        tokens={"prompt": 20 * n, "output": 0},
        model="smollm2-135m-instruct",
        model_fingerprint="m" * 16,
        dataset_hash=dataset,
        template_sha256=template,
        examples=examples,
    )


HEADER = {
    "started": "2026-11-20T10:00:00+00:00",
    "finished": "2026-11-20T10:01:00+00:00",
    "git_commit": "0123456789abcdef",
    "evalkit_version": "0.1.0",
    "row_limit": None,
}


def write_record(reports: Path, run_id: str, results: list[CandidateResult], prices=None) -> Path:
    header = {**HEADER, "run_id": run_id, "baseline": {"path": "reports/baseline.json", "updated": False}}
    record = with_pairs(build_record(header, results, prices), results)  # as the run's recorder builds it
    return write_run(reports, record, example_rows(results), keep_runs=0)

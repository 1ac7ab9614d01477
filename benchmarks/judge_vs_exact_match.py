"""The judge against a scorer that is known to be right: on the demo's order-extraction suite, where exact
match is the truth, how often does the default model, as a judge, agree with it? (BENCHMARKS.md, "Judge")

    .venv/bin/python benchmarks/judge_vs_exact_match.py [--rows N] [--out FILE] [--model NAME]

Each order-extraction candidate runs twice on the same rows: once scored by exact match (its suite as
committed) and once by the ``judge`` scorer with ``prompts/judges/order_id.j2``, read by likelihood, as a
plain prompt and as a chat turn. The generated outputs are the same both times (the second run answers from
the result cache); only the grading differs. For each candidate and reading: the judge's agreement with
exact match and Cohen's kappa, with 95% intervals, and the four counts (judge pass or fail against
exact-match right or wrong).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if TYPE_CHECKING:
    from evalkit.results import CandidateResult

READINGS = {"likelihood": "mode: likelihood", "likelihood, chat": "mode: likelihood\n    chat: true"}
MODEL = "smollm2-135m-instruct"


def judged_suite(folder: Path, reading: str, model: str = MODEL) -> Path:
    """The order-extraction suite, graded by the judge (paths made absolute: the file lives elsewhere)."""
    suites = ROOT / "suites"
    text = f"""\
suite: orders-judged
model: {model}
dataset: {{path: {suites / "data" / "orders_test.jsonl"}}}
task:
  kind: generate
  target: order_id
  max_new_tokens: 24
  stop: ["\\n"]
  scorer:
    name: judge
    model: {model}
    rubric: {ROOT / "prompts" / "judges" / "order_id.j2"}
    {READINGS[reading]}
candidates:
  zero_shot:
    prompt: {ROOT / "prompts" / "orders" / "zero_shot.j2"}
  few_shot:
    prompt: {ROOT / "prompts" / "orders" / "few_shot.j2"}
    fewshot: {{path: {suites / "data" / "orders_train.jsonl"}, k: 3, seed: 0}}
"""
    path = folder / f"orders-judged-{reading.replace(', ', '-')}.eval.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def agreement(exact: CandidateResult, judged: CandidateResult) -> dict:
    from evalkit.stats import cohen_kappa, kappa_interval, wilson_interval

    truth = [e.correct for e in exact.examples]
    verdicts = [e.correct for e in judged.examples]
    assert [e.output for e in exact.examples] == [e.output for e in judged.examples]
    n = len(truth)
    agree = sum(t == v for t, v in zip(truth, verdicts))
    return {
        "rows": n,
        "exact_match_accuracy": round(exact.metrics["accuracy"], 4),
        "judged_pass_rate": round(judged.metrics["accuracy"], 4),
        "agreement": round(agree / n, 4),
        "agreement_ci95": [round(x, 3) for x in wilson_interval(agree, n)],
        "kappa": round(cohen_kappa(truth, verdicts), 4),
        "kappa_ci95": [round(x, 3) for x in kappa_interval(truth, verdicts)],
        "judge_pass_exact_right": sum(t and v for t, v in zip(truth, verdicts)),
        "judge_fail_exact_right": sum(t and not v for t, v in zip(truth, verdicts)),
        "judge_pass_exact_wrong": sum(v and not t for t, v in zip(truth, verdicts)),
        "judge_fail_exact_wrong": sum(not t and not v for t, v in zip(truth, verdicts)),
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns (and writes to ``--out``) the record."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="the first N rows only (default: all 160)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "judge.json")
    parser.add_argument("--model", default=MODEL, help="the model that answers and judges: an alias or a folder")
    args = parser.parse_args(argv)

    from evalkit.models import cpu_has_native_bf16
    from evalkit.session import EvalSession

    work = Path(tempfile.mkdtemp(prefix="evalkit-judge-"))
    session = EvalSession(root=ROOT, reports_dir=work / "reports", cache_dir=work / "cache")
    results = []
    try:
        exact_spec = session.spec(ROOT / "suites" / "orders.eval.yaml")
        if args.model != MODEL:
            exact_spec = exact_spec.model_copy(
                update={"model": exact_spec.model.model_copy(update={"name": args.model})}
            )
        for reading in READINGS:
            judged_spec = session.spec(judged_suite(work, reading, args.model))
            for candidate in ("zero_shot", "few_shot"):
                exact = session.run(exact_spec, candidate, limit=args.rows)
                started = time.perf_counter()
                judged = session.run(judged_spec, candidate, limit=args.rows)
                judged_s = time.perf_counter() - started
                session.results.pop((judged_spec.name, candidate))  # the next reading runs it again
                entry = {"candidate": candidate, "reading": reading, **agreement(exact, judged)}
                entry["judge_s"] = round(judged_s, 1)
                results.append(entry)
                print(json.dumps(entry), flush=True)
    finally:
        session.close()
    record = {
        "suite": "order-id-extraction",
        "judge": f"{args.model}, prompts/judges/order_id.j2, grades C/I",
        "results": results,
        "machine": {"cpu_bf16": cpu_has_native_bf16(), "processor": platform.processor(), "cores": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}")
    return record


if __name__ == "__main__":
    main()

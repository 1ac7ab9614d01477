"""The demo's few-shot candidates, timed without the result cache (see BENCHMARKS.md, "Few-shot prompts").

    .venv/bin/python benchmarks/fewshot_prefix.py [--out FILE] [--compare FILE] [--rows N] [--model NAME]

Evaluates ticket routing's and order extraction's few_shot candidates in one process (the model loads
and warms up on two rows first), then runs ticket routing's robustness search on few_shot with all six
perturbations. Prints milliseconds per example and the search's seconds, and writes every prediction,
choice log-probability and robustness outcome to ``--out``. ``--compare`` reads an earlier ``--out`` file
and reports how far the scores moved and whether any prediction, generated text or search outcome
changed, with the speed-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PERTURBATIONS = ["case", "whitespace", "typos", "punctuation", "distractor", "choice_order"]


@contextmanager
def count_tokens() -> Iterator[dict]:
    """Counts, inside the block, the tokens each classify row needs in full and the shared prefix it skips,
    by wrapping the transformers backend (a measurement aid: evalkit itself keeps no such count)."""
    import evalkit.backends.hf as hf

    counts = {"rows": 0, "whole": 0, "computed": 0}
    plan, score = hf.HFBackend._shared_prefixes, hf.HFBackend._score_choices
    prefix_of: dict[int, int] = {}

    def planned(self, adapter, sequences):
        groups = plan(self, adapter, sequences)
        prefix_of.clear()
        prefix_of.update({i: len(g.prefix) for g in groups for i in g.rows})
        return groups

    def scored(self, adapter, requests):
        results = score(self, adapter, requests)
        for k, result in enumerate(results):
            whole = result.context_tokens + sum(n - 1 for n in result.continuation_tokens)
            counts["rows"] += 1
            counts["whole"] += whole
            counts["computed"] += whole - prefix_of[k]
        return results

    hf.HFBackend._shared_prefixes, hf.HFBackend._score_choices = planned, scored  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        hf.HFBackend._shared_prefixes, hf.HFBackend._score_choices = plan, score  # type: ignore[method-assign]


def measure(rows: int | None, model: str | None = None) -> dict:
    """The figures of both candidates and of the search; ``model`` replaces the suites' model."""
    from evalkit.models import cpu_has_native_bf16
    from evalkit.session import EvalSession
    from evalkit.spec import SuiteSpec

    def demo(suite: str) -> SuiteSpec:
        spec = session.spec(ROOT / "suites" / f"{suite}.eval.yaml")
        if model is None:
            return spec
        return spec.model_copy(update={"model": spec.model.model_copy(update={"name": model})})

    reports = Path(tempfile.mkdtemp(prefix="evalkit-fewshot-"))
    session = EvalSession(root=ROOT, reports_dir=reports, cache_dir=None)
    figures: dict = {"machine": {"cpus": os.cpu_count(), "native_bf16": cpu_has_native_bf16()}, "candidates": {}}
    for suite in ("tickets", "orders"):
        spec = demo(suite).model_copy(update={"robustness": None})  # timed on its own below
        session.run(spec, "few_shot", limit=2)  # warm-up: the model loads and its kernels are built
        session.results.clear()
        started = time.perf_counter()
        result = session.run(spec, "few_shot", limit=rows)
        seconds = time.perf_counter() - started
        figures["candidates"][suite] = {
            "rows": result.n,
            "seconds": seconds,
            "ms_per_example": 1000 * seconds / result.n,
            "accuracy": result.metrics["accuracy"],
            "outputs": [e.output for e in result.examples],
            "logprobs": [e.details.get("logprobs") for e in result.examples],
        }
        print(f"{suite} few_shot: {result.n} rows, {1000 * seconds / result.n:.1f} ms/example", flush=True)
    spec = demo("tickets")
    assert spec.robustness is not None
    everything = spec.robustness.model_copy(update={"perturbations": PERTURBATIONS, "candidates": ["few_shot"]})
    spec = spec.model_copy(update={"robustness": everything})
    session.results.clear()
    with count_tokens() as counts:
        started = time.perf_counter()
        result = session.run(spec, "few_shot", limit=rows)
        searched_s = time.perf_counter() - started
    assert result.robustness is not None
    robustness = result.robustness.as_json()
    figures["robustness"] = {
        "perturbations": PERTURBATIONS,
        "seconds": robustness["wall_s"],
        "with_evaluation_s": searched_s,
        "invariance": robustness["invariance"],
        "held": robustness["held"],
        "flipped": robustness["flipped"],
        "model_calls": robustness["model_calls"],
        "tokens": counts,  # the candidate's 160 evaluated rows included, then the search's
    }
    print(
        f"tickets few_shot robustness ({len(PERTURBATIONS)} perturbations): {robustness['wall_s']:.1f} s, "
        f"invariance {robustness['invariance']:.3f}; {counts['rows']} rows scored: "
        f"{counts['whole']} tokens whole, {counts['computed']} after shared prefixes",
        flush=True,
    )
    session.close()
    return figures


def compare(before: dict, after: dict) -> None:
    for suite, now in after["candidates"].items():
        then = before["candidates"][suite]
        changed = sum(a != b for a, b in zip(then["outputs"], now["outputs"]))
        moved = max(
            (
                abs(x - y)
                for a, b in zip(then["logprobs"], now["logprobs"])
                if a and b
                for x, y in zip(a.values(), b.values())
            ),
            default=0.0,
        )
        print(
            f"{suite} few_shot: {then['ms_per_example']:.1f} -> {now['ms_per_example']:.1f} ms/example "
            f"({then['ms_per_example'] / now['ms_per_example']:.2f}x); {changed} of {now['rows']} outputs changed; "
            f"largest score change {moved:.2e}"
        )
    then, now = before["robustness"], after["robustness"]
    print(
        f"tickets few_shot robustness: {then['seconds']:.1f} -> {now['seconds']:.1f} s ({then['seconds'] / now['seconds']:.2f}x); "
        f"outcomes {'identical' if then['flipped'] == now['flipped'] else 'CHANGED'}"
    )


def main(argv: list[str] | None = None) -> dict:
    """Measure; returns (and writes to ``--out``) the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fewshot_prefix.json")
    parser.add_argument("--compare", type=Path, help="an earlier --out file to compare with")
    parser.add_argument("--rows", type=int, help="only the first N rows of each suite")
    parser.add_argument("--model", help="run the demo suites on this model (an alias or a folder) instead of theirs")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = measure(args.rows, args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"written: {args.out}")
    if args.compare:
        compare(json.loads(args.compare.read_text()), figures)
    return figures


if __name__ == "__main__":
    main()

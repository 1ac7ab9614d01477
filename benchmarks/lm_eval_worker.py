"""Run one task with lm-evaluation-harness and print what it predicted and how long it took (JSON).

Runs inside benchmarks/.venv-lmeval (lm_eval is not an evalkit dependency); called by eval_vs_lm_eval.py.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", required=True)
    parser.add_argument("--task-dir", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--kind", choices=["classify", "generate"], required=True)
    args = parser.parse_args()

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.manual_seed(0)
    lm = HFLM(pretrained=args.model, dtype=args.dtype, batch_size=args.batch_size, device="cpu")
    tasks = TaskManager(include_path=args.task_dir)
    common = dict(model=lm, tasks=[args.task], task_manager=tasks, num_fewshot=0, bootstrap_iters=0, verbosity="ERROR")
    simple_evaluate(limit=2, **common)  # warm-up: builds the task's dataset cache and the model's kernels
    started = time.perf_counter()
    result = simple_evaluate(log_samples=True, **common)
    seconds = time.perf_counter() - started
    samples = sorted(result["samples"][args.task], key=lambda s: s["doc_id"])
    predictions = []
    for sample in samples:
        responses = sample["filtered_resps"]
        if args.kind == "classify":  # one (loglikelihood, is_greedy) per choice: the prediction is the best one
            logliks = [float(r[0]) for r in responses]
            predictions.append(max(range(len(logliks)), key=lambda i: logliks[i]))
        else:
            predictions.append(responses[0] if isinstance(responses[0], str) else responses[0][0])
    metrics = result["results"][args.task]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "examples": len(samples),
                "predictions": predictions,
                "accuracy": metrics.get("acc,none", metrics.get("exact_match,none")),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()

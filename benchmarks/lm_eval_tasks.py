"""lm-eval's own tasks, run unchanged by evalkit and by lm-eval's HF backend: scores and speed (BENCHMARKS.md).

    .venv/bin/python benchmarks/lm_eval_tasks.py [--rows 100] [--gsm8k-rows 20] [--tasks arc_easy,...]

For each task, each tool runs as a user runs it, in a fresh process timed from its start to its exit, on the
first ``--rows`` documents, the same model in float32:

- evalkit: ``pytest SUITE --evalkit-no-cache`` on a suite with `lm_eval: {task: NAME, data_files: ...}`, its
  data the hub-schema files of ../shared/datasets/hub_schema;
- lm-eval: ``lm-eval run --model hf`` on a task YAML that includes lm-eval's own and points its dataset at the
  same files (lm-eval's `include:` and `dataset_kwargs`).

Compared per document: each metric lm-eval computes (acc, acc_norm; exact_match under both gsm8k filters).
A document whose acc differs is shown with the gap between its two best choices on each side: a near-tie
(both gaps under 0.01 nats) is where float sums in another order may pick the other choice.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIRROR = ROOT.parent / "shared" / "datasets" / "hub_schema"
BIN = Path(sys.executable).parent
MODEL = "smollm2-135m-instruct"
NEAR_TIE = 0.01  # nats between the two best choices
TASKS: dict[str, dict[str, Any]] = {
    "arc_easy": {"files": {"test": "allenai/ai2_arc/ARC-Easy/test.jsonl"}, "shots": 0},
    "arc_challenge": {"files": {"test": "allenai/ai2_arc/ARC-Challenge/test.jsonl"}, "shots": 0},
    "sst2": {"files": {"validation": "nyu-mll/glue/sst2/validation.jsonl"}, "shots": 0},
    # the mirror holds gsm8k's test split only: both tools draw its 5 demos from that file
    "gsm8k": {"files": {"train": "openai/gsm8k/main/test.jsonl", "test": "openai/gsm8k/main/test.jsonl"}, "shots": 5},
    # MMLU's data is not mirrored here: 50 project-written arithmetic rows in its schema, 5-shot from `dev`
    "mmlu_anatomy": {
        "files": {"dev": "mmlu_schema_dev.jsonl", "test": "mmlu_schema_test.jsonl"},
        "shots": 5,
        "folder": ROOT / "tests" / "data" / "lm_eval",
    },
}


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode not in (0, 1):  # pytest exits 1 when a threshold fails; the figures are still written
        sys.exit(f"failed: {' '.join(command)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return seconds


def files(name: str) -> dict[str, str]:
    folder = TASKS[name].get("folder", MIRROR)
    return {split: str(folder / file) for split, file in TASKS[name]["files"].items()}


def run_evalkit(name: str, rows: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    folder = work / f"evalkit-{name}"
    folder.mkdir()
    suite = folder / f"{name}.eval.yaml"
    shots = TASKS[name]["shots"]
    metric = "exact_match,strict-match" if name == "gsm8k" else "acc"
    suite.write_text(
        f"suite: bench-{name}\nmodel: {MODEL}\nlm_eval:\n  task: {name}\n  num_fewshot: {shots}\n  limit: {rows}\n"
        f"  metric: {metric}\n  data_files: {json.dumps(files(name))}\n"
    )
    reports = folder / "reports"
    command = [str(BIN / "pytest"), suite.name, "-q", "-p", "no:cacheprovider", "--evalkit-no-cache"]
    seconds = timed([*command, "--evalkit-reports", str(reports)], folder, env)
    examples = [json.loads(line) for line in (reports / "latest" / "examples.jsonl").read_text().splitlines()]
    docs = {int(e["details"]["doc_id"]): e for e in examples}
    return {
        "seconds": seconds,
        "metrics": {doc: e["details"]["metrics"] for doc, e in docs.items()},
        "outputs": {doc: e["output"] for doc, e in docs.items()},
    }


def run_lm_eval(name: str, rows: int, work: Path, model_path: str, batch: int, env: dict[str, str]) -> dict[str, Any]:
    import lm_eval.tasks

    folder = work / f"lm_eval-{name}"
    folder.mkdir()
    included = lm_eval.tasks.TaskManager().task_index[name].yaml_path
    splits = {"train": "training_split", "validation": "validation_split", "test": "test_split"}
    lines = [f"include: {included}", f"task: bench_{name}", "dataset_path: json", "dataset_name: null"]
    lines.append(f"dataset_kwargs: {json.dumps({'data_files': files(name)})}")
    lines += [f"{key}: {json.dumps(split if split in files(name) else None)}" for split, key in splits.items()]
    (folder / f"bench_{name}.yaml").write_text("\n".join(lines) + "\n")
    out = folder / "out"
    command = [
        str(BIN / "lm-eval"), "run", "--model", "hf", "--model_args", f"pretrained={model_path},dtype=float32",
        "--device", "cpu", "--batch_size", str(batch), "--include_path", str(folder), "--tasks", f"bench_{name}",
        "--num_fewshot", str(TASKS[name]["shots"]), "--limit", str(rows), "--log_samples", "--output_path", str(out),
    ]  # fmt: skip
    seconds = timed(command, folder, env)
    (samples_file,) = out.rglob(f"samples_bench_{name}_*.jsonl")
    metrics: dict[int, dict[str, float]] = {}
    outputs: dict[int, Any] = {}
    gaps: dict[int, float] = {}
    for line in samples_file.read_text().splitlines():
        sample = json.loads(line)
        doc = int(sample["doc_id"])
        suffix = "" if sample["filter"] == "none" else f",{sample['filter']}"
        metrics.setdefault(doc, {}).update({f"{m}{suffix}": float(sample[m]) for m in sample["metrics"]})
        responses = sample["filtered_resps"]
        if responses and isinstance(responses[0], list):  # multiple choice: (loglikelihood, greedy) per choice
            scores = sorted((float(r[0]) for r in responses), reverse=True)
            gaps[doc] = scores[0] - scores[1] if len(scores) > 1 else float("inf")
            outputs[doc] = max(range(len(responses)), key=lambda i: float(responses[i][0]))
        elif doc not in outputs:
            outputs[doc] = responses[0]
    return {"seconds": seconds, "metrics": metrics, "outputs": outputs, "gaps": gaps}


def evalkit_gaps(name: str, work: Path) -> dict[int, float]:
    """The gap between the two best choices of each document, from evalkit's run record (its logprobs)."""
    gaps: dict[int, float] = {}
    reports = work / f"evalkit-{name}" / "reports" / "latest" / "examples.jsonl"
    for line in reports.read_text().splitlines():
        example = json.loads(line)
        scores = sorted(example["details"].get("logprobs") or [], reverse=True)
        if len(scores) > 1:
            gaps[int(example["details"]["doc_id"])] = scores[0] - scores[1]
    return gaps


def compare(name: str, rows: int, work: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    order = ["evalkit", "lm_eval"] if list(TASKS).index(name) % 2 == 0 else ["lm_eval", "evalkit"]
    runs: dict[str, dict[str, Any]] = {}
    for tool in order:
        runs[tool] = (
            run_evalkit(name, rows, work, env)
            if tool == "evalkit"
            else run_lm_eval(name, rows, work, args.model_path, args.batch_size, env)
        )
    ours, theirs = runs["evalkit"], runs["lm_eval"]
    docs = sorted(set(ours["metrics"]) & set(theirs["metrics"]))
    names = sorted(set().union(*(theirs["metrics"][d] for d in docs)))
    per_metric: dict[str, dict[str, Any]] = {}
    for metric in names:
        mine = [ours["metrics"][d].get(metric) for d in docs]
        lm = [theirs["metrics"][d].get(metric) for d in docs]
        differing = [d for d, a, b in zip(docs, mine, lm) if a != b]
        per_metric[metric] = {
            "evalkit": sum(v or 0.0 for v in mine) / len(docs),
            "lm_eval": sum(v or 0.0 for v in lm) / len(docs),
            "differing": differing,
        }
    ours_gaps = evalkit_gaps(name, work)
    differing = sorted({d for m in per_metric.values() for d in m["differing"]})
    ties = {d: {"evalkit_gap": ours_gaps.get(d), "lm_eval_gap": theirs["gaps"].get(d)} for d in differing}
    run = {
        "task": name,
        "rows": len(docs),
        "num_fewshot": TASKS[name]["shots"],
        "evalkit_s": ours["seconds"],
        "lm_eval_s": theirs["seconds"],
        "speedup": theirs["seconds"] / ours["seconds"],
        "metrics": {m: {k: v for k, v in f.items() if k != "differing"} | {"differing": len(f["differing"])}
                    for m, f in per_metric.items()},
        "differing_documents": ties,
        # the chosen choice's index, or the generated text (evalkit's run record keeps outputs as text)
        "outputs_differ": sum(str(ours["outputs"].get(d)) != str(theirs["outputs"].get(d)) for d in docs),
    }  # fmt: skip
    shown = ", ".join(
        f"{m} {f['evalkit']:.3f} vs {f['lm_eval']:.3f} ({len(f['differing'])} differ)" for m, f in per_metric.items()
    )
    print(
        f"{name} ({len(docs)} documents, {TASKS[name]['shots']}-shot, process start to exit): evalkit "
        f"{ours['seconds']:.1f} s, lm-eval hf {theirs['seconds']:.1f} s, x{run['speedup']:.2f}; {shown}; "
        f"{run['outputs_differ']} outputs differ; "
        f"differing documents and their top-2 gaps (nats): {ties or 'none'}",
        flush=True,
    )
    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100, help="documents of each multiple-choice task")
    parser.add_argument("--gsm8k-rows", type=int, default=20, help="documents of gsm8k (5-shot generation)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--batch-size", type=int, default=16, help="lm-eval's --batch_size")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lm_eval_tasks.json"))
    args = parser.parse_args(argv)
    if not MIRROR.is_dir():
        sys.exit(f"the hub-schema data sets are not at {MIRROR}")
    from evalkit.models import resolve_model

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args.model_path = str(resolve_model(MODEL).path)
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    work = Path(tempfile.mkdtemp(prefix="evalkit-lm-eval-"))
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "bf16": sorted(set(re.findall(r"avx512_bf16|amx_bf16", cpu)))},
        "runs": [],
    }
    try:
        for name in args.tasks.split(","):
            rows = args.gsm8k_rows if name == "gsm8k" else args.rows
            report["runs"].append(compare(name, rows, work, args, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()

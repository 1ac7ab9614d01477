"""evalkit against lm-evaluation-harness: same model, rows and prompts, end to end (see BENCHMARKS.md).

    bash benchmarks/eval_vs_lm_eval.sh [--arc-rows 500] [--sst2-rows 872] [--generate-rows 100] ...

For each dtype and task, each tool runs as a user runs it, in a fresh process timed from its start to its
exit: evalkit as ``pytest SUITE --evalkit-no-cache``, lm_eval as its ``lm_eval`` command. The tools
alternate which runs first. Printed: seconds of each, the ratio, whether the predictions agree, the share
of the machine's matrix-multiply rate that evalkit's classify reaches, peak resident memory, and the result
cache's cold / warm / one-prompt-changed pytest runs. bfloat16 runs only where the CPU has bf16 matrix
instructions (AVX512-BF16 or AMX) or on a GPU; elsewhere the benchmark says it could not be measured.
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
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
LM_EVAL = ROOT / "benchmarks" / ".venv-lmeval" / "bin" / "lm_eval"
PYTEST = ROOT / ".venv" / "bin" / "pytest"
# Runs a command and reports its peak resident memory (the largest of its processes) on stderr.
PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(f'peak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); sys.exit(code)"
)
MODEL = "smollm2-135m-instruct"

# Each task: the rows, lm_eval's task YAML, and the evalkit suite with the same prompt.
TASKS = {
    "arc_easy": {
        "source": "arc_easy_test/data.jsonl",
        "kind": "classify",
        "lm_eval": """\
            output_type: multiple_choice
            doc_to_text: "Question: {{question}}\\nAnswer:"
            doc_to_choice: "{{choices}}"
            doc_to_target: "{{answer}}"
            metric_list: [{metric: acc}]
            """,
        "evalkit": """\
            task: {kind: classify, choices_field: choices, target: answer, choice_prefix: " "}
            candidates:
              plain: {template: "Question: {{ question }}\\nAnswer:"}
            """,
    },
    "sst2": {
        "source": "sst2_validation/data.jsonl",
        "kind": "classify",
        "lm_eval": """\
            output_type: multiple_choice
            doc_to_text: "{{text}}\\nQuestion: Is this sentence positive or negative?\\nAnswer:"
            doc_to_choice: ["negative", "positive"]
            doc_to_target: label
            metric_list: [{metric: acc}]
            """,
        "evalkit": """\
            task: {kind: classify, choices: [negative, positive], target: label, choice_prefix: " "}
            candidates:
              plain: {template: "{{ text }}\\nQuestion: Is this sentence positive or negative?\\nAnswer:"}
            """,
    },
    "nq_open": {
        "source": "nq_open_dev/data.jsonl",
        "kind": "generate",
        "lm_eval": """\
            output_type: generate_until
            doc_to_text: "Q: {{question}}?\\nA:"
            doc_to_target: "{{answers}}"
            generation_kwargs: {until: ["\\n"], do_sample: false, max_gen_toks: 16}
            metric_list: [{metric: exact_match, ignore_case: true, ignore_punctuation: true}]
            """,
        "evalkit": """\
            task: {kind: generate, target: answers, max_new_tokens: 16, stop: ["\\n"], scorer: exact_match}
            candidates:
              plain: {template: "Q: {{ question }}?\\nA:"}
            """,
    },
}


# ------------------------------------------------------------------------------------------ driver


def matmul_rate(dtype: str, seconds: float = 3.0) -> float:
    """GFLOP/s of a 2048 x 2048 x 2048 product in ``dtype`` through ``torch.nn.functional.linear``, the
    call a model's layers make (on a CPU it takes oneDNN's path, which plain ``@`` may not)."""
    import torch

    a = torch.randn(2048, 2048, dtype=getattr(torch, dtype))
    w = torch.randn(2048, 2048, dtype=getattr(torch, dtype))
    torch.nn.functional.linear(a, w)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.nn.functional.linear(a, w)
        runs += 1
    return 2 * 2048**3 * runs / (time.perf_counter() - started) / 1e9


def write_task(work: Path, name: str, rows: int, *, model: str = MODEL, datasets: Path = SHARED) -> tuple[Path, Path]:
    """The first ``rows`` rows (of ``datasets``' copy of the task) as JSONL, lm_eval's task YAML and
    evalkit's suite on ``model``, in ``work``."""
    task = TASKS[name]
    data = work / f"{name}.jsonl"
    with (datasets / task["source"]).open() as source, data.open("w") as out:
        for i, line in enumerate(source):
            if i >= rows:
                break
            row = json.loads(line)
            row["id"] = str(row.get("id", i))
            out.write(json.dumps(row) + "\n")
    tasks = work / "lm_eval_tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / f"bench_{name}.yaml").write_text(
        f"task: bench_{name}\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: {data}}}}}\n"
        f"test_split: test\n" + textwrap.dedent(task["lm_eval"])
    )
    suite = work / f"{name}.eval.yaml"
    suite.write_text(
        f"suite: bench-{name}\nmodel: {model}\ndataset: {{path: {data.name}}}\n" + textwrap.dedent(task["evalkit"])
    )
    return suite, tasks


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from the command's start to its exit, and its peak resident memory in MB."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    peak = re.search(r"peak_rss_kb=(\d+)", out.stderr)
    assert peak is not None
    return seconds, int(peak.group(1)) / 1024


def run_evalkit(suite: Path, env: dict[str, str]) -> dict:
    """``pytest SUITE --evalkit-no-cache`` from start to exit; predictions from the run folder it writes."""
    reports = suite.parent / "reports"
    shutil.rmtree(reports, ignore_errors=True)
    command = [str(PYTEST), suite.name, "-q", "-p", "no:cacheprovider", "--evalkit-no-cache"]
    seconds, peak_rss_mb = timed(command + ["--evalkit-reports", str(reports)], suite.parent, env)
    (suite_record,) = json.loads((reports / "latest" / "results.json").read_text())["suites"].values()
    (record,) = suite_record.values()
    rows = [json.loads(line) for line in (reports / "latest" / "examples.jsonl").read_text().splitlines()]
    rows.sort(key=lambda r: r["row"])
    if record["task"] == "classify":  # the chosen choice's index
        predictions = [list(r["details"]["logprobs"]).index(r["output"]) for r in rows]
    else:
        predictions = [r["output"] for r in rows]
    return {
        "seconds": seconds,
        "examples": record["n"],
        "predictions": predictions,
        "accuracy": record["metrics"]["accuracy"],
        "tokens": record["tokens"],
        "compute_s": record["compute_s"],
        "peak_rss_mb": peak_rss_mb,
    }


def run_lm_eval(model: str, dtype: str, task_dir: Path, name: str, batch_size: int, env: dict[str, str]) -> dict:
    """The ``lm_eval`` command from start to exit; predictions from the samples it logs."""
    out = task_dir.parent / "lm_eval_out"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        str(LM_EVAL),
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype={dtype}",
        "--device",
        "cpu",
        "--batch_size",
        str(batch_size),
        "--include_path",
        str(task_dir),
        "--tasks",
        f"bench_{name}",
        "--log_samples",
        "--output_path",
        str(out),
        "--seed",
        "0",
    ]
    seconds, peak_rss_mb = timed(command, task_dir.parent, env)
    (samples_file,) = out.rglob(f"samples_bench_{name}_*.jsonl")
    (results_file,) = out.rglob("results_*.json")
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
    predictions: list[int | str] = []
    for sample in samples:
        responses = sample["filtered_resps"]
        if TASKS[name]["kind"] == "classify":  # one (loglikelihood, is_greedy) per choice: the best one
            logliks = [float(r[0]) for r in responses]
            predictions.append(max(range(len(logliks)), key=lambda i: logliks[i]))
        else:
            predictions.append(responses[0] if isinstance(responses[0], str) else responses[0][0])
    metrics = json.loads(results_file.read_text())["results"][f"bench_{name}"]
    return {
        "seconds": seconds,
        "examples": len(samples),
        "predictions": predictions,
        "accuracy": metrics.get("acc,none", metrics.get("exact_match,none")),
        "peak_rss_mb": peak_rss_mb,
    }


def with_dtype(suite: Path, dtype: str, model: str = MODEL) -> Path:
    text = suite.read_text().replace(f"model: {model}\n", f"model: {{name: {model}, dtype: {dtype}}}\n")
    path = suite.with_name(suite.name.replace(".eval.yaml", f".{dtype}.eval.yaml"))
    path.write_text(text)
    return path


def agree(name: str, a: list, b: list) -> int:
    """How many examples the two tools predict differently (generate: outputs compared stripped)."""
    if TASKS[name]["kind"] == "generate":
        return sum(x.strip() != y.strip() for x, y in zip(a, b))
    return sum(x != y for x, y in zip(a, b))


def cache_runs(
    work: Path, rows: int, env: dict[str, str], *, model: str = MODEL, datasets: Path = SHARED
) -> dict[str, Any]:
    """pytest on a two-candidate suite: cold cache, warm re-run, and after one candidate's prompt changes."""
    project = work / "cache-project"
    (project / "suites").mkdir(parents=True)
    (work / "cache-data").mkdir()
    write_task(work / "cache-data", "sst2", rows, model=model, datasets=datasets)
    shutil.copy(work / "cache-data" / "sst2.jsonl", project / "suites" / "sst2.jsonl")
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    suite = project / "suites" / "sst2.eval.yaml"
    first = "{{ text }}\\nQuestion: Is this sentence positive or negative?\\nAnswer:"
    second = "Review: {{ text }}\\nSentiment:"
    suite.write_text(
        textwrap.dedent(f"""\
        suite: sst2
        model: {model}
        dataset: {{path: sst2.jsonl, limit: {rows}}}
        task: {{kind: classify, choices: [negative, positive], target: label, choice_prefix: " "}}
        candidates:
          question: {{template: "{first}"}}
          review: {{template: "{second}"}}
        """)
    )
    pytest = [str(ROOT / ".venv" / "bin" / "pytest"), "suites", "-v"]

    def timed(args: list[str]) -> tuple[float, str]:
        started = time.perf_counter()
        out = subprocess.run(args, cwd=project, capture_output=True, text=True, env=env)
        return time.perf_counter() - started, out.stdout

    def cache_line(stdout: str) -> str:
        found = re.search(r"result cache .*", stdout)
        if found is None:
            sys.exit(f"pytest printed no result cache line:\n{stdout[-3000:]}")
        return found.group(0)

    startup, _ = timed(pytest + ["--collect-only", "-q"])
    figures: dict[str, Any] = {"rows": rows, "pytest_collect_only_s": startup}
    for label in ("cold", "warm"):
        figures[f"{label}_s"], stdout = timed(pytest)
        figures[f"{label}_cache"] = cache_line(stdout)
    suite.write_text(suite.read_text().replace("Sentiment:", "The sentiment is"))
    figures["one_prompt_changed_s"], stdout = timed(pytest)
    figures["one_prompt_changed_cache"] = "\n".join(re.findall(r"(?:result cache|  sst2::).*", stdout))
    return figures


def non_embedding_parameters(model_path: str) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path)
    return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)


def compare_task(name: str, n: int, dtype: str, work: Path, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """Both tools on one task's first ``n`` rows in ``dtype``, end to end; the tools alternate going first."""
    folder = work / f"{dtype}-{name}"
    folder.mkdir()
    suite, task_dir = write_task(folder, name, n, model=args.model, datasets=args.datasets)
    suite = with_dtype(suite, dtype, args.model)
    runs = {
        "evalkit": lambda: run_evalkit(suite, env),
        "lm_eval": lambda: run_lm_eval(args.model_path, dtype, task_dir, name, args.lm_eval_batch_size, env),
    }
    order = list(runs) if list(TASKS).index(name) % 2 == 0 else list(runs)[::-1]
    results = {tool: runs[tool]() for tool in order}
    ours, theirs = results["evalkit"], results["lm_eval"]
    run = {
        "dtype": dtype,
        "task": name,
        "rows": n,
        "evalkit": {k: v for k, v in ours.items() if k != "predictions"},
        "lm_eval": {k: v for k, v in theirs.items() if k != "predictions"},
        "speedup": theirs["seconds"] / ours["seconds"],
        "predictions_differ": agree(name, ours["predictions"], theirs["predictions"]),
        "predictions": ours["predictions"],
    }
    if TASKS[name]["kind"] == "classify":
        flops = ours["tokens"]["prompt"] * 2 * args.parameters
        run["evalkit_gflops"] = flops / ours["compute_s"] / 1e9
        run["mfu"] = run["evalkit_gflops"] / args.matmul[dtype]
    print(
        f"{dtype} {name} ({n} rows, process start to exit): evalkit {ours['seconds']:.1f} s, lm_eval "
        f"{theirs['seconds']:.1f} s, x{run['speedup']:.2f}; accuracy {ours['accuracy']:.3f} vs "
        f"{theirs['accuracy']:.3f}; {run['predictions_differ']} predictions differ",
        flush=True,
    )
    return run


def print_table(report: dict) -> None:
    from tabulate import tabulate

    table = []
    for run in report["runs"]:
        ours, theirs = run["evalkit"], run["lm_eval"]
        table.append(
            [
                run["dtype"],
                run["task"],
                run["rows"],
                f"{ours['seconds']:.1f}",
                f"{theirs['seconds']:.1f}",
                f"{run['speedup']:.2f}x",
                f"{ours['accuracy']:.3f} / {theirs['accuracy']:.3f}",
                run["predictions_differ"],
                f"{100 * run['mfu']:.0f}%" if "mfu" in run else "-",
                f"{ours['peak_rss_mb']:.0f} / {theirs['peak_rss_mb']:.0f}",
            ]
        )
    headers = [
        "dtype",
        "task",
        "rows",
        "evalkit s",
        "lm_eval s",
        "speed-up",
        "accuracy (evalkit / lm_eval)",
        "predictions differ",
        "evalkit MFU",
        "peak RSS MB (evalkit / lm_eval)",
    ]
    print()
    print(tabulate(table, headers=headers, tablefmt="github"))
    for note in report["skipped"]:
        print(note)
    if "dtype_changes" in report:
        print(
            "\npredictions bf16 changes against fp32 (evalkit): "
            + ", ".join(f"{k} {v['changed']} of {v['rows']}" for k, v in report["dtype_changes"].items())
        )
    c = report["cache"]
    if c is None:
        return
    print(
        f"\nresult cache (pytest, 2 candidates x {c['rows']} SST-2 rows; pytest --collect-only alone takes "
        f"{c['pytest_collect_only_s']:.1f}s):\n  cold {c['cold_s']:.1f}s: {c['cold_cache']}\n"
        f"  warm {c['warm_s']:.1f}s: {c['warm_cache']}\n  one prompt changed {c['one_prompt_changed_s']:.1f}s: "
        f"{c['one_prompt_changed_cache']}"
    )


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns (and writes to ``--out``) the report printed as the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arc-rows", type=int, default=500)
    parser.add_argument("--sst2-rows", type=int, default=872)
    parser.add_argument("--generate-rows", type=int, default=100)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--lm-eval-batch-size", type=int, default=16)
    parser.add_argument("--cache-rows", type=int, default=200, help="0 skips the result-cache runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_vs_lm_eval.json"))
    parser.add_argument("--model", default=MODEL, help="model alias or local folder (both tools run it)")
    parser.add_argument(
        "--datasets", type=Path, default=SHARED, help="folder holding arc_easy_test/, sst2_validation/, nq_open_dev/"
    )
    args = parser.parse_args(argv)

    import torch

    from evalkit.models import cpu_has_native_bf16, resolve_model

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args.model_path = str(resolve_model(args.model).path)
    args.parameters = non_embedding_parameters(args.model_path)
    work = Path(tempfile.mkdtemp(prefix="evalkit-bench-"))
    rows = {"arc_easy": args.arc_rows, "sst2": args.sst2_rows, "nq_open": args.generate_rows}
    native_bf16 = cpu_has_native_bf16() or torch.cuda.is_available()
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "native_bf16": native_bf16, "torch": torch.__version__},
        "runs": [],
        "skipped": [],
    }
    dtypes = args.dtypes.split(",")
    if "bfloat16" in dtypes and not native_bf16:
        dtypes.remove("bfloat16")
        report["skipped"].append(
            "bfloat16 not measured: this CPU has no bf16 matrix instructions (AVX512-BF16 or AMX), so bf16 "
            "would run emulated, several times slower than float32, and its figures would not be bf16's"
        )
    args.matmul = {dtype: matmul_rate(dtype) for dtype in dtypes}
    report["machine"]["matmul_gflops"] = args.matmul
    print("matrix-multiply rate: " + ", ".join(f"{d} {rate:.1f} GFLOP/s" for d, rate in args.matmul.items()))
    for dtype in dtypes:
        for name in args.tasks.split(","):
            report["runs"].append(compare_task(name, rows[name], dtype, work, args, env))
    if len(dtypes) > 1:
        by = {(run["dtype"], run["task"]): run.pop("predictions") for run in report["runs"]}
        report["dtype_changes"] = {
            name: {
                "rows": len(by[(dtypes[0], name)]),
                "changed": agree(name, by[(dtypes[0], name)], by[(dtypes[1], name)]),
            }
            for name in args.tasks.split(",")
        }
    for run in report["runs"]:
        run.pop("predictions", None)
    report["cache"] = (
        cache_runs(work, args.cache_rows, env, model=args.model, datasets=args.datasets) if args.cache_rows else None
    )
    shutil.rmtree(work, ignore_errors=True)
    print_table(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {args.out}")
    return report


if __name__ == "__main__":
    main()

"""evalkit against lm-evaluation-harness: same model, rows and prompts, run interleaved (see BENCHMARKS.md).

    bash benchmarks/eval_vs_lm_eval.sh [--arc-rows 500] [--sst2-rows 872] [--generate-rows 100] ...

For each dtype and task, one process per tool loads the model, warms up on two rows and evaluates the
rows; the tools alternate which runs first. Printed: examples per second of each, the ratio, whether
the predictions agree, the share of the machine's matrix-multiply rate that evalkit's classify reaches,
the result cache's cold / warm / one-prompt-changed pytest runs, and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
LM_EVAL_PYTHON = ROOT / "benchmarks" / ".venv-lmeval" / "bin" / "python"
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


# ------------------------------------------------------------------------------------------ workers


def evalkit_worker(suite: Path) -> None:
    """Evaluate the suite's one candidate in this process (no result cache) and print JSON."""
    from evalkit.session import EvalSession

    session = EvalSession(root=suite.parent, reports_dir=suite.parent / "reports", cache_dir=None)
    spec = session.spec(suite)
    session.run(spec, "plain", limit=2)  # warm-up: loads the model and its kernels
    started = time.perf_counter()
    result = session.run(spec, "plain")
    seconds = time.perf_counter() - started
    backend = next(iter(session._backends.values()))
    params = sum(
        p.numel()
        for name, p in backend.model.named_parameters()
        if "embed_tokens" not in name and "lm_head" not in name
    )
    predictions = [e.output for e in result.examples]
    if spec.task.kind == "classify":
        predictions = [list(e.details["logprobs"]).index(e.output) for e in result.examples]  # the choice's index
    print(
        json.dumps(
            {
                "seconds": seconds,
                "examples": result.n,
                "predictions": predictions,
                "accuracy": result.metrics["accuracy"],
                "tokens": result.tokens,
                "non_embedding_parameters": params,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


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


def write_task(work: Path, name: str, rows: int) -> tuple[Path, Path]:
    """The first ``rows`` rows as JSONL, lm_eval's task YAML and evalkit's suite, in ``work``."""
    task = TASKS[name]
    data = work / f"{name}.jsonl"
    with (SHARED / task["source"]).open() as source, data.open("w") as out:
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
        f"suite: bench-{name}\nmodel: {MODEL}\ndataset: {{path: {data.name}}}\n" + textwrap.dedent(task["evalkit"])
    )
    return suite, tasks


def run_json(command: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def with_dtype(suite: Path, dtype: str) -> Path:
    text = suite.read_text().replace(f"model: {MODEL}\n", f"model: {{name: {MODEL}, dtype: {dtype}}}\n")
    path = suite.with_name(suite.name.replace(".eval.yaml", f".{dtype}.eval.yaml"))
    path.write_text(text)
    return path


def agree(name: str, a: list, b: list) -> int:
    """How many examples the two tools predict differently (generate: outputs compared stripped)."""
    if TASKS[name]["kind"] == "generate":
        return sum(x.strip() != y.strip() for x, y in zip(a, b))
    return sum(x != y for x, y in zip(a, b))


def cache_runs(work: Path, rows: int, env: dict[str, str]) -> dict:
    """pytest on a two-candidate suite: cold cache, warm re-run, and after one candidate's prompt changes."""
    project = work / "cache-project"
    (project / "suites").mkdir(parents=True)
    (work / "cache-data").mkdir()
    write_task(work / "cache-data", "sst2", rows)
    shutil.copy(work / "cache-data" / "sst2.jsonl", project / "suites" / "sst2.jsonl")
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    suite = project / "suites" / "sst2.eval.yaml"
    first = "{{ text }}\\nQuestion: Is this sentence positive or negative?\\nAnswer:"
    second = "Review: {{ text }}\\nSentiment:"
    suite.write_text(
        textwrap.dedent(f"""\
        suite: sst2
        model: {MODEL}
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

    startup, _ = timed(pytest + ["--collect-only", "-q"])
    figures = {"rows": rows, "pytest_collect_only_s": startup}
    for label in ("cold", "warm"):
        figures[f"{label}_s"], stdout = timed(pytest)
        figures[f"{label}_cache"] = re.search(r"result cache .*", stdout).group(0)
    suite.write_text(suite.read_text().replace("Sentiment:", "The sentiment is"))
    figures["one_prompt_changed_s"], stdout = timed(pytest)
    figures["one_prompt_changed_cache"] = "\n".join(re.findall(r"(?:result cache|  sst2::).*", stdout))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arc-rows", type=int, default=500)
    parser.add_argument("--sst2-rows", type=int, default=872)
    parser.add_argument("--generate-rows", type=int, default=100)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument(
        "--slow-dtype-rows",
        type=int,
        default=40,
        help="rows per task in a dtype this CPU only emulates (bf16 without AMX/AVX512-BF16)",
    )
    parser.add_argument("--lm-eval-batch-size", type=int, default=16)
    parser.add_argument("--cache-rows", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_vs_lm_eval.json"))
    parser.add_argument("--evalkit-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evalkit_worker:
        return evalkit_worker(args.evalkit_worker)

    from tabulate import tabulate

    from evalkit.models import cpu_has_native_bf16, resolve_model

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    model_path = str(resolve_model(MODEL).path)
    work = Path(tempfile.mkdtemp(prefix="evalkit-bench-"))
    rows = {"arc_easy": args.arc_rows, "sst2": args.sst2_rows, "nq_open": args.generate_rows}
    report: dict = {"machine": {"cpus": os.cpu_count(), "native_bf16": cpu_has_native_bf16()}, "runs": []}
    dtypes = args.dtypes.split(",")
    for dtype in dtypes:
        report["machine"][f"matmul_gflops_{dtype}"] = matmul_rate(dtype)
    print(
        "matrix-multiply rate: "
        + ", ".join(f"{d} {report['machine'][f'matmul_gflops_{d}']:.1f} GFLOP/s" for d in dtypes)
    )

    predictions: dict[tuple[str, str], list] = {}
    for dtype in dtypes:
        slow = dtype == "bfloat16" and not cpu_has_native_bf16()
        for k, name in enumerate(TASKS):
            n = min(rows[name], args.slow_dtype_rows) if slow else rows[name]
            (work / f"{dtype}-{name}").mkdir()
            suite, task_dir = write_task(work / f"{dtype}-{name}", name, n)
            suite = with_dtype(suite, dtype)
            evalkit_cmd = [sys.executable, __file__, "--evalkit-worker", str(suite)]
            lm_eval_cmd = [
                str(LM_EVAL_PYTHON),
                str(ROOT / "benchmarks" / "lm_eval_worker.py"),
                "--model",
                model_path,
                "--dtype",
                dtype,
                "--task-dir",
                str(task_dir),
                "--task",
                f"bench_{name}",
                "--batch-size",
                str(args.lm_eval_batch_size),
                "--kind",
                TASKS[name]["kind"],
            ]
            order = [("evalkit", evalkit_cmd), ("lm_eval", lm_eval_cmd)]
            results = dict((tool, run_json(cmd, env)) for tool, cmd in (order if k % 2 == 0 else order[::-1]))
            ours, theirs = results["evalkit"], results["lm_eval"]
            run = {
                "dtype": dtype,
                "task": name,
                "rows": n,
                "evalkit": {k: v for k, v in ours.items() if k != "predictions"},
                "lm_eval": {k: v for k, v in theirs.items() if k != "predictions"},
                "speedup": (ours["examples"] / ours["seconds"]) / (theirs["examples"] / theirs["seconds"]),
                "predictions_differ": agree(name, ours["predictions"], theirs["predictions"]),
            }
            if TASKS[name]["kind"] == "classify":
                flops = ours["tokens"]["prompt"] * 2 * ours["non_embedding_parameters"]
                run["evalkit_gflops"] = flops / ours["seconds"] / 1e9
                run["mfu"] = run["evalkit_gflops"] / report["machine"][f"matmul_gflops_{dtype}"]
            predictions[(dtype, name)] = ours["predictions"]
            report["runs"].append(run)
            print(
                f"{dtype} {name} ({n} rows): evalkit {ours['examples'] / ours['seconds']:.2f} ex/s, lm_eval "
                f"{theirs['examples'] / theirs['seconds']:.2f} ex/s, x{run['speedup']:.2f}; accuracy "
                f"{ours['accuracy']:.3f} vs {theirs['accuracy']:.3f}; {run['predictions_differ']} predictions differ",
                flush=True,
            )
    if len(dtypes) > 1:
        changed = {}
        for name in TASKS:
            a, b = predictions.get((dtypes[0], name)), predictions.get((dtypes[1], name))
            if a and b:
                m = min(len(a), len(b))
                changed[name] = {"rows": m, "changed": agree(name, a[:m], b[:m])}
        report["dtype_changes"] = changed
    report["cache"] = cache_runs(work, args.cache_rows, env)
    shutil.rmtree(work, ignore_errors=True)

    table = []
    for run in report["runs"]:
        ours, theirs = run["evalkit"], run["lm_eval"]
        table.append(
            [
                run["dtype"],
                run["task"],
                run["rows"],
                f"{ours['examples'] / ours['seconds']:.2f}",
                f"{theirs['examples'] / theirs['seconds']:.2f}",
                f"{run['speedup']:.2f}x",
                f"{ours['accuracy']:.3f} / {theirs['accuracy']:.3f}",
                run["predictions_differ"],
                f"{100 * run['mfu']:.0f}%" if "mfu" in run else "-",
                f"{ours['peak_rss_mb']:.0f} / {theirs['peak_rss_mb']:.0f}",
            ]
        )
    print()
    print(
        tabulate(
            table,
            headers=[
                "dtype",
                "task",
                "rows",
                "evalkit ex/s",
                "lm_eval ex/s",
                "speed-up",
                "accuracy (evalkit / lm_eval)",
                "predictions differ",
                "evalkit MFU",
                "peak RSS MB (evalkit / lm_eval)",
            ],
            tablefmt="github",
        )
    )
    if "dtype_changes" in report:
        print(
            "\npredictions bf16 changes against fp32: "
            + ", ".join(f"{k} {v['changed']} of {v['rows']}" for k, v in report["dtype_changes"].items())
        )
    c = report["cache"]
    print(
        f"\nresult cache (pytest, 2 candidates x {c['rows']} SST-2 rows; pytest --collect-only alone takes "
        f"{c['pytest_collect_only_s']:.1f}s):\n  cold {c['cold_s']:.1f}s: {c['cold_cache']}\n"
        f"  warm {c['warm_s']:.1f}s: {c['warm_cache']}\n  one prompt changed {c['one_prompt_changed_s']:.1f}s: "
        f"{c['one_prompt_changed_cache']}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()

"""The demo's suites through a real OpenAI-compatible server against the in-process backend (BENCHMARKS.md,
"Served models").

    .venv/bin/python benchmarks/served_vs_in_process.py [--rows N] [--sst2-rows N] [--only-sst2] [--out FILE]
    .venv/bin/python benchmarks/served_vs_in_process.py --kv-cache [--rows N]

Starts llama-cpp-python's server on the embedded GGUF (as the tests do), then for each candidate runs the
same rows through ``backend: openai`` and through the in-process ``hf`` backend, without the result cache:

- classify: how often the served prediction equals the in-process one given the same tokens (the BOS
  token the served path prepends, then the prompt) and the in-process default (the prompt alone), the
  mean absolute difference of the choice log-probabilities, and each side's accuracy;
- generate: how often the generated texts are equal, and each side's accuracy.

Then, when ``../shared/datasets`` is beside the repository, SST-2 rows scored both ways (a two-way task).
Then the throughput of ``concurrency`` 1 and 8 against the same server (rows per second, generate and
classify). ``--kv-cache`` instead runs ticket routing's inline candidate against two servers, one with
llama.cpp's default float16 KV cache and one with a float32 one (``--type_k 0 --type_v 0``), and adds
both figures to ``--out`` under ``kv_cache``. The server answers one request at a time (llama-cpp-python holds a global lock), so the
difference is what overlapping the client's work and the network with the server's buys.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# (suite, candidate, share of --rows): the server takes about a second per echoed classify request of a
# short prompt (it sorts the vocabulary in Python for every prompt token), so the long zero-shot prompts get half
CANDIDATES = [
    ("tickets", "inline", 1.0),
    ("tickets", "zero_shot", 0.5),
    ("orders", "zero_shot", 1.0),
    ("orders", "few_shot", 1.0),
]


SST2 = ROOT.parent / "shared" / "datasets" / "sst2_validation" / "data.jsonl"


def served_model(url: str, concurrency: int = 8):
    from evalkit.backends.base import ModelConfig

    return ModelConfig(
        backend="openai",
        name="smollm2-135m-instruct",
        base_url=url,
        tokenizer="smollm2-135m-instruct",
        concurrency=concurrency,
        extra_body={"repeat_penalty": 1.0},
    )


def demo_spec(session, suite: str):
    """The demo suite without its robustness search (and so without its invariance thresholds)."""
    spec = session.spec(ROOT / "suites" / f"{suite}.eval.yaml").model_copy(update={"robustness": None})
    spec._thresholds = {
        candidate: {metric: t for metric, t in thresholds.items() if metric != "invariance"}
        for candidate, thresholds in spec._thresholds.items()
    }
    return spec


def compare(session, url: str, suite: str, candidate: str, rows: int) -> dict:
    from evalkit.backends.base import ChoiceRequest

    spec = demo_spec(session, suite)
    served_spec = spec.model_copy(update={"model": served_model(url), "suite": f"{spec.name}-served"})
    started = time.perf_counter()
    served = session.run(served_spec, candidate, limit=rows)
    served_s = time.perf_counter() - started
    local = session.run(spec, candidate, limit=rows)
    n = served.n
    entry = {
        "suite": suite,
        "candidate": candidate,
        "rows": n,
        "served_accuracy": served.metrics["accuracy"],
        "in_process_accuracy": local.metrics["accuracy"],
        "served_s": round(served_s, 1),
    }
    if spec.task.kind == "classify":
        choices = list(spec.task.choices or [])
        prefix = spec.task.choice_prefix
        hf = session.backend_for(spec.model, spec.path.parent)
        same = hf.score_choices(
            [ChoiceRequest("<|im_start|>" + e.prompt, tuple(prefix + c for c in choices)) for e in served.examples]
        )
        picked = [choices[max(range(len(choices)), key=r.logprobs.__getitem__)] for r in same]
        differences = [
            abs(e.details["logprobs"][c] - lp)
            for e, r in zip(served.examples, same)
            for c, lp in zip(choices, r.logprobs)
        ]
        gold = [e.target for e in served.examples]
        entry.update(
            agreement_same_tokens=sum(e.output == p for e, p in zip(served.examples, picked)) / n,
            agreement_in_process_default=sum(a.output == b.output for a, b in zip(served.examples, local.examples)) / n,
            in_process_same_tokens_accuracy=sum(p == g for p, g in zip(picked, gold)) / n,
            mean_abs_logprob_difference=round(sum(differences) / len(differences), 4),
        )
    else:
        entry["agreement_texts"] = sum(a.output == b.output for a, b in zip(served.examples, local.examples)) / n
    return entry


def sst2(session, url: str, rows: int, source: Path = SST2) -> dict | None:
    """SST-2 validation rows (``source``, when present) scored both ways with the same prompt,
    ``Review: TEXT\nSentiment:`` with the choices positive and negative: a two-way task with wider margins."""
    from evalkit.backends.base import ChoiceRequest

    if rows <= 0 or not source.exists():
        return None
    data = [json.loads(line) for line in source.read_text().splitlines()[:rows]]
    choices = ("negative", "positive")
    requests = [ChoiceRequest(f"Review: {r['text']}\nSentiment:", tuple(" " + c for c in choices)) for r in data]
    served = session.backend_for(served_model(url), ROOT)
    hf = session.backend_for(session.spec(ROOT / "suites" / "tickets.eval.yaml").model, ROOT)
    picked = {
        "served": served.score_choices(requests),
        "same_tokens": hf.score_choices([ChoiceRequest("<|im_start|>" + r.context, r.continuations) for r in requests]),
        "default": hf.score_choices(requests),
    }
    labels = {name: [max(range(2), key=a.logprobs.__getitem__) for a in answers] for name, answers in picked.items()}
    gold = [r["label"] for r in data]
    return {
        "rows": len(data),
        "accuracy": {name: sum(p == g for p, g in zip(found, gold)) / len(data) for name, found in labels.items()},
        "agreement_same_tokens": sum(a == b for a, b in zip(labels["served"], labels["same_tokens"])) / len(data),
        "agreement_in_process_default": sum(a == b for a, b in zip(labels["served"], labels["default"])) / len(data),
    }


def throughput(session, url: str, rows: int) -> list[dict]:
    measured = []
    for suite, candidate, n in [("orders", "zero_shot", rows), ("tickets", "inline", max(4, rows // 4))]:
        spec = demo_spec(session, suite)
        for concurrency in (1, 8, 1, 8):  # alternated: the host's speed drifts
            served_spec = spec.model_copy(
                update={"model": served_model(url, concurrency), "suite": f"{spec.name}-served"}
            )
            session.results.clear()
            started = time.perf_counter()
            result = session.run(served_spec, candidate, limit=n)
            seconds = time.perf_counter() - started
            measured.append(
                {
                    "suite": suite,
                    "kind": spec.task.kind,
                    "concurrency": concurrency,
                    "rows": result.n,
                    "seconds": round(seconds, 2),
                    "rows_per_s": round(result.n / seconds, 2),
                }
            )
            print(json.dumps(measured[-1]), flush=True)
    return measured


KV_CACHES = {"float16 (default)": (), "float32": ("--type_k", "0", "--type_v", "0")}


def kv_cache(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Ticket routing's inline candidate against a server with each KV cache type, figures added to --out."""
    from evalkit.session import EvalSession
    from tests.llama_server import LlamaServer

    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    record["kv_cache"] = []
    for name, extra in KV_CACHES.items():
        server = LlamaServer(work / f"server-{len(record['kv_cache'])}.log", extra=extra).start()
        session = EvalSession(root=ROOT, reports_dir=work / "reports", cache_dir=None)
        try:
            figures = compare(session, server.url, "tickets", "inline", args.rows)
        finally:
            session.close()
            server.stop()
        record["kv_cache"].append({"kv_cache": name, "server_args": list(extra), **figures})
        print(json.dumps(record["kv_cache"][-1]), flush=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}")
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison (``argv``: the command line's arguments) and return the figures written."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--sst2-rows", type=int, default=40, help="SST-2 rows from --sst2 (0: none)")
    parser.add_argument("--sst2", type=Path, default=SST2, help="SST-2 validation rows as JSONL (text, label 0/1)")
    parser.add_argument("--only-sst2", action="store_true", help="run only the SST-2 comparison (added to --out)")
    parser.add_argument(
        "--kv-cache", action="store_true", help="only inline, with a float16 and a float32 KV cache (added to --out)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "served.json")
    args = parser.parse_args(argv)

    from evalkit.models import cpu_has_native_bf16
    from evalkit.session import EvalSession
    from tests.llama_server import LlamaServer

    work = Path(tempfile.mkdtemp(prefix="evalkit-served-"))
    if args.kv_cache:
        return kv_cache(args, work)
    server = LlamaServer(work / "server.log").start()
    session = EvalSession(root=ROOT, reports_dir=work / "reports", cache_dir=None)
    record = json.loads(args.out.read_text()) if args.only_sst2 and args.out.exists() else {}
    try:
        if not args.only_sst2:
            record["agreement"] = []
            for suite, candidate, share in CANDIDATES:
                record["agreement"].append(compare(session, server.url, suite, candidate, int(args.rows * share)))
                print(json.dumps(record["agreement"][-1]), flush=True)
        record["sst2"] = sst2(session, server.url, args.sst2_rows, args.sst2)
        print(json.dumps(record["sst2"]), flush=True)
        if not args.only_sst2:
            record["throughput"] = throughput(session, server.url, args.rows)
    finally:
        session.close()
        server.stop()
    record.update(
        machine={"cpu_bf16": cpu_has_native_bf16(), "processor": platform.processor(), "cores": os.cpu_count()},
        server="llama-cpp-python 0.3.36 (python -m llama_cpp.server), SmolLM2-135M-Instruct Q4_1 GGUF",
    )
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}")
    return record


if __name__ == "__main__":
    main()

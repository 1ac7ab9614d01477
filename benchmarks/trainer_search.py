"""The trainer choosing its own hyperparameters, over-fitting seen as it happens, and two training processes,
on the demo's ticket-routing data and the embedded default model (BENCHMARKS.md, "Trainer: search,
over-fitting, two processes").

    .venv/bin/python benchmarks/trainer_search.py [search] [overfitting] [processes] [--out FILE]
        [--model NAME] [--rows N] [--train-rows N] [--trials N] [--overfit-rows N] [--overfit-epochs N]
        [--processes 1,2]

search       a 12-trial Optuna search (the space below), then the searched adapter and the demo's
             hand-chosen one (suites/tickets.eval.yaml) on the 200 golden rows, same prompt
overfitting  many epochs on few rows (the first 40 training rows, half of them held out, 15 epochs,
             learning rate 3e-3): where the over-fitting warning fires and which epoch the adapter keeps
processes    the demo's adapter settings trained on one process, then on two (accelerate launch,
             gloo on the CPU), each evaluated on the golden rows

Each part writes its figures into ``--out`` (default benchmarks/results/trainer.json), keeping the others.
Adapters are written in a temporary folder, except that the hand-chosen one is the demo's own
``adapters/tickets-lora`` (the same content hash: trained once, reused).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEMO_TRAINING = """\
    data: {data}
    prompt: {prompt}
    epochs: {epochs}
    learning_rate: {learning_rate}
    warmup_ratio: 0.1
    batch_size: 8
    lora: {{r: 16, alpha: 32, dropout: 0.05, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}}
    validation: {{fraction: {fraction}, early_stopping_patience: {patience}}}
    seed: 0
"""
MODEL = "smollm2-135m-instruct"
SEARCH = """\
    search:
      trials: 12
      learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}
      lora.r: [4, 8, 16]
      lora.dropout: {low: 0.0, high: 0.2}
      weight_decay: [0.0, 0.01]
      objective: validation_accuracy
      pruner: median
      seed: 0
"""


@dataclass(frozen=True)
class Options:
    """What the parts run on; the defaults are the published figures' settings."""

    model: str = MODEL
    rows: int | None = None  # golden rows evaluated (None: all 200)
    train_rows: int | None = None  # training rows (None: all of tickets_train.jsonl)
    trials: int = 12
    overfit_rows: int = 40
    overfit_epochs: float = 15
    processes: tuple[int, ...] = (1, 2)

    @property
    def demo(self) -> bool:
        """Whether the hand-chosen adapter is the demo's own (same model and rows: the same content hash)."""
        return self.model == MODEL and self.train_rows is None


def training_rows(work: Path, options: Options, rows: int | None) -> Path:
    """The demo's training rows, or a file of its first ``rows``."""
    source = ROOT / "suites" / "data" / "tickets_train.jsonl"
    if rows is None:
        return source
    lines = source.read_text(encoding="utf-8").splitlines()
    few = work / f"tickets_train_{rows}.jsonl"
    few.write_text("\n".join(lines[:rows]) + "\n", encoding="utf-8")
    return few


def suite_text(work: Path, entries: dict[str, str], options: Options = Options()) -> str:
    """The ticket-routing suite with the given `train:` entries, one candidate per adapter (plain prompt)."""
    suites = ROOT / "suites"
    train = ""
    candidates = ""
    for name, body in entries.items():
        demo = name == "tickets-lora" and options.demo
        output = ROOT / "adapters" / "tickets-lora" if demo else work / "adapters" / name
        train += f"  {name}:\n    output: {output}\n{body}"
        candidates += f"  {name}:\n    prompt: {ROOT / 'prompts' / 'tickets' / 'plain.j2'}\n    adapter: {name}\n"
    limit = f", limit: {options.rows}" if options.rows is not None else ""
    return f"""\
suite: tickets-trainer
model: {options.model}
dataset: {{path: {suites / "data" / "tickets_test.jsonl"}{limit}}}
task:
  kind: classify
  choices: [billing, technical, account, shipping, other]
  target: label
train:
{train}candidates:
{candidates}"""


def demo_training(data: Path | None = None, **overrides) -> str:
    settings = {
        "data": data or ROOT / "suites" / "data" / "tickets_train.jsonl",
        "prompt": ROOT / "prompts" / "tickets" / "plain.j2",
        "epochs": 3,
        "learning_rate": "1.0e-3",
        "fraction": 0.1,
        "patience": 2,
        **overrides,
    }
    return DEMO_TRAINING.format(**settings)


def evaluate(suite: Path, candidates: list[str], work: Path) -> dict[str, dict]:
    from evalkit.session import EvalSession

    session = EvalSession(root=ROOT, reports_dir=work / "reports", cache_dir=work / "cache", train_mode="never")
    try:
        spec = session.spec(suite)
        out = {}
        for name in candidates:
            result = session.run(spec, name)
            out[name] = {"accuracy": round(result.accuracy, 4), "ci95": [round(x, 4) for x in result.ci95["accuracy"]]}
        return out
    finally:
        session.close()


def adapter_summary(record: dict) -> dict:
    keep = ("train_seconds", "best_validation_accuracy", "best_epoch", "epochs_run", "global_steps", "processes")
    return {
        **{k: record.get(k) for k in keep},
        "overfitting": record.get("overfitting"),
        "epochs": record.get("epochs"),
        "settings": {
            k: record["config"][k] for k in ("learning_rate", "weight_decay", "epochs") if k in record["config"]
        }
        | {f"lora.{k}": record["config"]["lora"][k] for k in ("r", "dropout")},
    }


def part_search(work: Path, options: Options = Options()) -> dict:
    from evalkit.train import ensure_adapter

    suite = work / "search.eval.yaml"
    data = training_rows(work, options, options.train_rows)
    entries = {
        "tickets-lora": demo_training(data),
        "tickets-lora-searched": demo_training(data) + SEARCH.replace("trials: 12", f"trials: {options.trials}"),
    }
    suite.write_text(suite_text(work, entries, options))
    hand = ensure_adapter(suite, "tickets-lora", notify=print)
    started = time.perf_counter()
    searched = ensure_adapter(suite, "tickets-lora-searched", notify=print)
    wall = time.perf_counter() - started
    search = searched.record["search"]
    accuracy = evaluate(suite, ["tickets-lora", "tickets-lora-searched"], work)
    return {
        "command": "benchmarks/trainer_search.py search",
        "search": {k: search[k] for k in ("objective", "space", "complete", "pruned", "seconds", "best")},
        "trials": [
            {k: t[k] for k in ("number", "state", "params", "value", "pruned_at_epoch", "seconds")}
            | {"val_accuracy": [e["val_accuracy"] for e in t["epochs"]]}
            for t in search["trials"]
        ],
        "search_wall_s": round(wall, 1),
        "hand_chosen": adapter_summary(hand.record) | {"test": accuracy["tickets-lora"]},
        "searched": adapter_summary(searched.record) | {"test": accuracy["tickets-lora-searched"]},
    }


def part_overfitting(work: Path, options: Options = Options()) -> dict:
    from evalkit.train import ensure_adapter

    few = training_rows(work, options, options.overfit_rows)
    suite = work / "overfit.eval.yaml"
    body = demo_training(data=few, epochs=options.overfit_epochs, learning_rate="3.0e-3", fraction=0.5, patience=3)
    suite.write_text(suite_text(work, {"tickets-lora-overtrained": body}, options))
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    adapter = ensure_adapter(suite, "tickets-lora-overtrained", notify=say)
    accuracy = evaluate(suite, ["tickets-lora-overtrained"], work)
    return {
        "command": "benchmarks/trainer_search.py overfitting",
        "rows": options.overfit_rows,
        "warning": next((line for line in lines if "over-fitting at epoch" in line), None),
        **adapter_summary(adapter.record),
        "test": accuracy["tickets-lora-overtrained"],
    }


def part_processes(work: Path, options: Options = Options()) -> dict:
    results = {}
    data = training_rows(work, options, options.train_rows)
    for processes in options.processes:
        name = f"tickets-lora-{processes}p"
        suite = work / f"{name}.eval.yaml"
        suite.write_text(suite_text(work, {name: demo_training(data)}, options))
        command = [sys.executable, "-m", "evalkit", "train", str(suite)]
        if processes > 1:
            command = [
                sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "evalkit", "train",
                str(suite),
            ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=work)
        wall = time.perf_counter() - started
        record = json.loads((work / "adapters" / name / "training.json").read_text())
        results[str(processes)] = adapter_summary(record) | {
            "wall_s": round(wall, 1),
            "tokens_per_second": record["tokens_per_second"],
            "test": evaluate(suite, [name], work)[name],
        }
    return {"command": "benchmarks/trainer_search.py processes", "by_processes": results}


PARTS = {"search": part_search, "overfitting": part_overfitting, "processes": part_processes}


def main(argv: list[str] | None = None) -> dict:
    """Run the parts; returns (and writes to ``--out``) the record, the other parts' figures kept."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "trainer.json")
    parser.add_argument("--model", default=MODEL, help="model alias or local folder")
    parser.add_argument("--rows", type=int, help="golden rows evaluated (default: all)")
    parser.add_argument("--train-rows", type=int, help="training rows of search and processes (default: all)")
    parser.add_argument("--trials", type=int, default=12, help="the search's trials")
    parser.add_argument("--overfit-rows", type=int, default=40)
    parser.add_argument("--overfit-epochs", type=float, default=15)
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts of the processes part")
    args = parser.parse_args(argv)
    options = Options(
        model=args.model,
        rows=args.rows,
        train_rows=args.train_rows,
        trials=args.trials,
        overfit_rows=args.overfit_rows,
        overfit_epochs=args.overfit_epochs,
        processes=tuple(int(n) for n in args.processes.split(",")),
    )
    from evalkit.models import cpu_has_native_bf16

    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}; the parts are {', '.join(PARTS)}")
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="evalkit-trainer-") as folder:
        for part in args.parts or list(PARTS):
            record[part] = PARTS[part](Path(folder), options)
            record[part]["measured"] = time.strftime("%Y-%m-%d")
            record["machine"] = {
                "cpu_bf16": cpu_has_native_bf16(),
                "processor": platform.processor(),
                "cores": os.cpu_count(),
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(record, indent=2) + "\n")
            print(json.dumps(record[part], indent=2)[:4000], flush=True)
    return record


if __name__ == "__main__":
    main()

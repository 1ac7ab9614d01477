"""Train the same LoRA adapter with evalkit's trainer and with trl's SFTTrainer; compare speed and accuracy.

Both train on the same SST-2 rows (read from ../shared/datasets, split here into train and test), with
the same LoRA shape, learning rate, batch size, epochs, seed and precision, both completion-only. Speed
is real (non-padding) tokens of the training set times epochs, divided by the wall time of
``trainer.train()``. Accuracy is measured for both adapters by evalkit's choice scoring on the test rows.

Run it through ``benchmarks/train_vs_trl.sh``, which installs trl into its own environment.

bfloat16 autocast runs everywhere torch does, but a CPU without bfloat16 instructions (AVX512-BF16 or
AMX) emulates it, and a training step is then about 30 times slower than in float32. On such a CPU the
bfloat16 comparison trains on fewer rows (``--bf16-train-rows``, default 32) so that it ends in minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
SST2 = REPO.parent / "shared" / "datasets" / "sst2_validation" / "data.jsonl"
TEMPLATE = "Review: {{ text }}\nSentiment:"
CHOICES = ["negative", "positive"]


def split_sst2(path: Path, train_rows: int, test_rows: int, seed: int) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    if train_rows + test_rows > len(rows):
        raise SystemExit(f"{path} has {len(rows)} rows; asked for {train_rows} + {test_rows}")
    keep = [{"id": str(r["id"]), "text": r["text"], "label": CHOICES[r["label"]]} for r in rows]
    return keep[:train_rows], keep[train_rows : train_rows + test_rows]


def write_suite(folder: Path, train: list[dict], test: list[dict], args: argparse.Namespace, precision: str) -> Path:
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = folder / "sst2.eval.yaml"
    suite.write_text(f"""\
suite: sst2-benchmark
dataset: {{path: test.jsonl}}
task: {{kind: classify, choices: {json.dumps(CHOICES)}, target: label}}
train:
  sst2-lora:
    output: adapters/evalkit-{precision}
    data: train.jsonl
    template: {json.dumps(TEMPLATE)}
    epochs: {args.epochs}
    learning_rate: {args.learning_rate}
    batch_size: {args.batch_size}
    precision: {precision}
    lora: {{r: {args.rank}, alpha: {2 * args.rank}, dropout: 0.0, target_modules: [q_proj, v_proj]}}
    validation: {{fraction: 0}}
    seed: {args.seed}
candidates:
  base: {{template: {json.dumps(TEMPLATE)}}}
  lora: {{template: {json.dumps(TEMPLATE)}, adapter: sst2-lora}}
""")
    return suite


def train_evalkit(suite: Path, model_path: Path, work: Path) -> dict:
    from evalkit.suite import load_suite
    from evalkit.train.examples import build_training_set
    from evalkit.train.trainer import fit

    spec = load_suite(suite)
    training = build_training_set(spec, "sst2-lora", model_path)
    result = fit(training, model_path, list(range(len(training))), [], work / "evalkit-checkpoints", resume=False)
    out = work / f"evalkit-adapter-{spec.train['sst2-lora'].precision}"
    result.model.save_pretrained(str(out))
    measured: Any = getattr(result, "record", result)  # what the run measured: its training record
    return {
        "seconds": measured.train_seconds,
        "tokens": None,
        "tokens_per_second": measured.tokens_per_second,
        "adapter": out,
        "padding_fraction": measured.padding_fraction,
    }


def train_trl(suite: Path, model_path: Path, work: Path, args: argparse.Namespace, precision: str) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from evalkit.suite import load_suite
    from evalkit.train.examples import build_training_set

    training = build_training_set(load_suite(suite), "sst2-lora", model_path)  # the very same prompts and completions
    data = datasets.Dataset.from_dict({"prompt": list(training.prompts), "completion": list(training.completions)})
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    config = SFTConfig(
        output_dir=str(work / f"trl-checkpoints-{precision}"),
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        seed=args.seed,
        data_seed=args.seed,
        bf16=precision == "bfloat16",
        max_length=1024,
        packing=False,
        completion_only_loss=True,
        report_to=[],
        save_strategy="epoch",
        logging_steps=10,
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=precision == "bfloat16" and not torch.cuda.is_available(),
    )
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    trainer.remove_callback(PrinterCallback)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * args.epochs
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    out = work / f"trl-adapter-{precision}"
    trainer.model.save_pretrained(str(out))
    return {
        "seconds": round(seconds, 3),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1),
        "adapter": out,
    }


def accuracy(suite: Path, model_path: Path, fingerprint: str, adapter: Path | None) -> float:
    from evalkit.backends.base import Backend
    from evalkit.backends.hf import HFBackend
    from evalkit.data import load_dataset
    from evalkit.suite import load_suite
    from evalkit.tasks import prepare, task_kind

    spec = load_suite(suite)
    hf = HFBackend(model_path, fingerprint=fingerprint)
    backend: Backend = hf if adapter is None else hf.with_adapter("bench", adapter)
    dataset = load_dataset(spec.dataset_path, id_field=spec.id_field)
    prepared = prepare(spec, spec.candidates["base"], dataset, backend.apply_chat_template)
    return task_kind(spec.task.kind).score(prepared, backend).metrics["accuracy"]


TRAINERS = ("trl SFTTrainer", "evalkit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--test-rows", type=int, default=200)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precisions", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    parser.add_argument(
        "--bf16-train-rows",
        type=int,
        default=None,
        help="training rows for the bfloat16 comparison (default: --train-rows where bfloat16 is native, else 32)",
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model alias or local folder")
    parser.add_argument("--data", type=Path, default=SST2, help="SST-2 rows as JSONL (id, text, label 0/1)")
    parser.add_argument(
        "--trainers", default=",".join(TRAINERS), help=f"comma-separated, any of: {', '.join(TRAINERS)}"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    unknown = [t for t in args.trainers.split(",") if t not in TRAINERS]
    if unknown:
        parser.error(f"unknown trainer {', '.join(unknown)}; the trainers are {', '.join(TRAINERS)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns (and with ``--out`` writes) the figures printed as the table."""
    args = parse_args(argv)
    trainers = [t for t in TRAINERS if t in args.trainers.split(",")]

    import datasets
    from tabulate import tabulate
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()

    from evalkit.models import resolve_model

    trl_version = "not used"
    if "trl SFTTrainer" in trainers:
        import trl

        trl_version = trl.__version__

    torch.manual_seed(args.seed)
    resolved = resolve_model(args.model)
    train, test = split_sst2(args.data, args.train_rows, args.test_rows, args.seed)
    work = Path(tempfile.mkdtemp(prefix="evalkit-bench-"))
    print(
        f"SST-2: {len(train)} training rows, {len(test)} test rows; LoRA r={args.rank} on q_proj, v_proj; "
        f"{args.epochs:g} epoch(s), batch {args.batch_size}, lr {args.learning_rate:g}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, trl {trl_version}",
        flush=True,
    )
    rows = []
    figures: dict = {"base_accuracy": None, "runs": [], "trl": trl_version, "torch": torch.__version__}
    try:
        base_suite = write_suite(work, train, test, args, "float32")
        base_accuracy = accuracy(base_suite, resolved.path, resolved.fingerprint, None)
        figures["base_accuracy"] = base_accuracy
        print(f"base model accuracy (no adapter): {base_accuracy:.3f}", flush=True)
        for precision in args.precisions.split(","):
            rows_here = train
            if precision == "bfloat16":
                if not _bf16_supported():
                    print("bfloat16 autocast is not supported here; skipped")
                    continue
                n = args.bf16_train_rows or (len(train) if _bf16_native() else 32)
                if n < len(train):
                    print(
                        f"bfloat16 is emulated on this CPU (no AVX512-BF16 or AMX): training on the first {n} rows",
                        flush=True,
                    )
                rows_here = train[:n]
            suite = write_suite(work, rows_here, test, args, precision)
            runs: dict[str, Callable[[], dict]] = {
                "trl SFTTrainer": partial(train_trl, suite, resolved.path, work, args, precision),
                "evalkit": partial(train_evalkit, suite, resolved.path, work),
            }
            results = {}
            for name in trainers:
                print(f"training with {name} ({precision}) ...", flush=True)
                r = runs[name]()
                r["accuracy"] = accuracy(suite, resolved.path, resolved.fingerprint, r["adapter"])
                results[name] = r
                print(
                    f"  {r['tokens_per_second']:.1f} tokens/s, {r['seconds']:.1f}s, accuracy {r['accuracy']:.3f}",
                    flush=True,
                )
            speedup = (
                results["evalkit"]["tokens_per_second"] / results["trl SFTTrainer"]["tokens_per_second"]
                if len(results) == 2
                else None
            )
            for name, r in results.items():
                shown = f"{speedup:.2f}x" if name == "evalkit" and speedup is not None else ""
                rows.append(
                    [
                        precision,
                        len(rows_here),
                        name,
                        f"{r['tokens_per_second']:.1f}",
                        f"{r['seconds']:.1f}",
                        f"{r['accuracy']:.3f}",
                        shown,
                    ]
                )
                figures["runs"].append(
                    {
                        "precision": precision,
                        "train_rows": len(rows_here),
                        "trainer": name,
                        "tokens_per_second": r["tokens_per_second"],
                        "seconds": r["seconds"],
                        "accuracy": r["accuracy"],
                        "speed_vs_trl": round(speedup, 3) if name == "evalkit" and speedup is not None else None,
                    }
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        tabulate(
            rows, headers=["precision", "train rows", "trainer", "tokens/s", "train s", "test accuracy", "speed vs trl"]
        )
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"written to {args.out}")
    return figures


def _bf16_native() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(2, 2) @ torch.ones(2, 2)
        return True
    except RuntimeError:
        return False


if __name__ == "__main__":
    main()

"""The demo's support-answers judge, prompted and trained (BENCHMARKS.md, "A trained judge").

    .venv/bin/python benchmarks/judge_training.py [--epochs 2] [--train-rows N] [--model M] [--out FILE]

Copies `suites/answers.eval.yaml` into a work folder, then measures the judge's agreement with the human
verdicts of its calibration file (`suites/data/answers_judged.jsonl`, 60 rows) twice:

- prompted: the embedded model with the rubric, as the demo runs it;
- trained: the same model through a judge adapter (`train: {answers-judge: {judge: true}}`) trained on
  the project-written labelled verdicts of `suites/data/answers_verdicts_train.jsonl` (other policies and
  questions than the calibration rows; evalkit refuses a calibration file that shares rows with them).

Each side reports agreement and Cohen's kappa with their intervals, and the trained side its training
time. The candidates' own rows are limited to two (only the judge's figures are read).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SUITE = ROOT / "suites" / "answers.eval.yaml"
VERDICTS = ROOT / "suites" / "data" / "answers_verdicts_train.jsonl"


def suite_copy(folder: Path, *, trained: bool, epochs: float, train_rows: int | None, model: str | None) -> Path:
    """The demo's support-answers suite in ``folder`` (paths made absolute, no xfail marker), with a judge
    adapter when ``trained``."""
    import yaml

    config = yaml.safe_load(SUITE.read_text())
    here = SUITE.parent

    def absolute(relative: str) -> str:
        return str((here / relative).resolve())

    config["dataset"] = {"path": absolute(config["dataset"]["path"]), "limit": 2}
    config.pop("markers", None)
    scorer = config["task"]["scorer"]
    scorer["rubric"] = absolute(scorer["rubric"])
    scorer["calibration"] = absolute(scorer["calibration"])
    if model is not None:
        config["model"] = scorer["model"] = model
    for candidate in config["candidates"].values():
        candidate["prompt"] = absolute(candidate["prompt"])
    if trained:
        data = VERDICTS
        if train_rows is not None:
            data = folder / "verdicts.jsonl"
            data.write_text("".join(VERDICTS.read_text().splitlines(keepends=True)[:train_rows]))
        scorer["adapter"] = "answers-judge"
        config["train"] = {
            "answers-judge": {
                "judge": True,
                "output": str(folder / "adapters" / "answers-judge"),
                "data": str(data),
                "epochs": epochs,
                "learning_rate": 1.0e-3,
                "warmup_ratio": 0.1,
                "batch_size": 8,
                "lora": {
                    "r": 16,
                    "alpha": 32,
                    "dropout": 0.05,
                    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                },
                "validation": {"fraction": 0.1},
                "seed": 0,
            }
        }
    path = folder / ("trained" if trained else "prompted") / "answers.eval.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def figures(path: Path) -> dict[str, Any]:
    """The judge's calibration figures on one evaluation of the suite's first candidate."""
    from evalkit.testing import evaluate

    result = evaluate(path, "zero_shot")
    assert result.judge is not None and result.judge.calibration is not None
    c = result.judge.calibration
    return {
        "n": c.n,
        "agree": c.agree,
        "accuracy": round(c.accuracy, 4),
        "accuracy_ci95": [round(x, 4) for x in c.accuracy_ci],
        "kappa": round(c.kappa, 4),
        "kappa_ci95": [round(x, 4) for x in c.kappa_ci],
        "trusted": c.trusted,
        "min_agreement": c.min_agreement,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--train-rows", type=int, help="only the first N labelled verdicts (default: all)")
    parser.add_argument("--model", help="another model for the judge and the candidates (the smoke test's)")
    parser.add_argument("--workdir", type=Path, help="keep the copy and the adapter here (default: a new folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "judge_training.json")
    args = parser.parse_args(argv)

    from evalkit.suite import load_suite
    from evalkit.train import ensure_adapter

    folder = args.workdir or Path(tempfile.mkdtemp(prefix="evalkit-judge-"))
    folder.mkdir(parents=True, exist_ok=True)
    common = {"epochs": args.epochs, "train_rows": args.train_rows, "model": args.model}
    record: dict[str, Any] = {"prompted": figures(suite_copy(folder, trained=False, **common))}
    print(json.dumps(record), flush=True)
    trained = suite_copy(folder, trained=True, **common)
    started = time.perf_counter()
    adapter = ensure_adapter(load_suite(trained), "answers-judge", notify=print)
    record["training"] = {
        "rows": len(load_suite(trained).train["answers-judge"].data_path.read_text().splitlines()),
        "epochs": args.epochs,
        "seconds": round(time.perf_counter() - started, 1),
        "trained_now": adapter.trained_now,
        "best_validation_accuracy": adapter.record.get("best_validation_accuracy"),
    }
    record["trained"] = figures(trained)
    print(json.dumps(record), flush=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}")
    return record


if __name__ == "__main__":
    main()

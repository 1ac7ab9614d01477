"""The demo's support-answers judge, prompted and trained (BENCHMARKS.md, "A trained judge").

    .venv/bin/python benchmarks/judge_training.py [--epochs 2] [--train-rows N] [--model M] [--out FILE]

Copies `suites/trained_judge/answers.yaml` into a work folder (its adapter trained there, with the epochs
asked for), trains its judge adapter on the project-written labelled verdicts of
`suites/data/answers_verdicts_train.jsonl` (other policies and questions than the calibration rows;
evalkit refuses a calibration file that shares rows with them), then reads the judge's agreement with the
human verdicts of its calibration file (`suites/data/answers_judged.jsonl`, 60 rows) twice, as the suite's
report does: prompted (the embedded model with the rubric, as the demo's `suites/answers.eval.yaml` runs
it) and trained (through the adapter).

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalkit.record import Calibration

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SUITE = ROOT / "suites" / "trained_judge" / "answers.yaml"
ADAPTER = "answers-judge"


def suite_copy(folder: Path, *, epochs: float, train_rows: int | None, model: str | None) -> Path:
    """The trained-judge suite in ``folder``: paths made absolute, its adapter written under ``folder``,
    trained for ``epochs`` on the first ``train_rows`` verdicts."""
    import yaml

    config = yaml.safe_load(SUITE.read_text())
    here = SUITE.parent

    def absolute(relative: str) -> str:
        return str((here / relative).resolve())

    config["dataset"] = {"path": absolute(config["dataset"]["path"]), "limit": 2}
    config.pop("thresholds", None)  # only the judge is measured
    scorer = config["task"]["scorer"]
    scorer["rubric"] = absolute(scorer["rubric"])
    scorer["calibration"] = absolute(scorer["calibration"])
    if model is not None:
        config["model"] = scorer["model"] = model
    for candidate in config["candidates"].values():
        candidate["prompt"] = absolute(candidate["prompt"])
    train = config["train"][ADAPTER]
    data = Path(absolute(train["data"]))
    if train_rows is not None:
        subset = folder / "verdicts.jsonl"
        subset.write_text("".join(data.read_text().splitlines(keepends=True)[:train_rows]))
        data = subset
    train.update(output=str(folder / "adapters" / ADAPTER), data=str(data), epochs=epochs)
    path = folder / "answers.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def figures(c: Calibration) -> dict[str, Any]:
    """A judge's calibration figures, as the results file keeps them."""
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
    from evalkit.testing import evaluate
    from evalkit.train import ensure_adapter

    folder = args.workdir or Path(tempfile.mkdtemp(prefix="evalkit-judge-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = suite_copy(folder, epochs=args.epochs, train_rows=args.train_rows, model=args.model)
    spec = load_suite(path)
    started = time.perf_counter()
    adapter = ensure_adapter(spec, ADAPTER, notify=print)
    training = {
        "rows": len(spec.train[ADAPTER].data_path.read_text().splitlines()),
        "epochs": args.epochs,
        "seconds": round(time.perf_counter() - started, 1),
        "trained_now": adapter.trained_now,
        "best_validation_accuracy": adapter.record.get("best_validation_accuracy"),
    }
    result = evaluate(path, "zero_shot")  # the judge's calibration, prompted and trained, is the suite's
    assert result.judge is not None and result.judge.calibration is not None
    trained = result.judge.calibration
    assert trained.prompted is not None
    record = {"prompted": figures(trained.prompted), "training": training, "trained": figures(trained)}
    print(json.dumps(record), flush=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}")
    return record


if __name__ == "__main__":
    main()

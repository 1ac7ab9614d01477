"""The work each tool must do on the lm-evaluation-harness benchmark's classify rows (see BENCHMARKS.md).

    .venv/bin/python benchmarks/work_counts.py [--model NAME] [--datasets DIR] [--arc-rows N] [--sst2-rows N]

Counts, with the model's tokenizer only (no forward pass): the tokens each tool runs through the
decoder, the positions evalkit projects onto the vocabulary, the ratio of multiply-adds at equal speed
(the ceiling of the speed-up), and the padding share of evalkit's scoring batches.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
SST2_PROMPT = "\nQuestion: Is this sentence positive or negative?\nAnswer:"


def rows(name: str, limit: int | None, datasets: Path = SHARED) -> list[dict]:
    with (datasets / name / "data.jsonl").open() as f:
        return [json.loads(line) for line in f][:limit]


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Print (and return) each task's counts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model alias or local folder")
    parser.add_argument("--datasets", type=Path, default=SHARED, help="folder holding arc_easy_test/, sst2_validation/")
    parser.add_argument("--arc-rows", type=int, default=500)
    parser.add_argument("--sst2-rows", type=int, default=None, help="default: all")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evalkit.backends.batching import scoring_batches
    from evalkit.backends.hf import HFBackend, encode_choices
    from evalkit.models import resolve_model

    model = resolve_model(args.model)
    backend = HFBackend(model.path, fingerprint=model.fingerprint, lazy=True)
    config = json.loads((model.path / "config.json").read_text())
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    decoder = 2 * 106.2e6  # multiply-adds x 2 per token through the decoder (non-embedding parameters)
    projection = 2 * hidden * vocab  # per position projected onto the vocabulary
    tasks = {
        "arc_easy": [
            (f"Question: {r['question']}\nAnswer:", [" " + c for c in r["choices"]])
            for r in rows("arc_easy_test", args.arc_rows, args.datasets)
        ],
        "sst2": [
            (r["text"] + SST2_PROMPT, [" negative", " positive"])
            for r in rows("sst2_validation", args.sst2_rows, args.datasets)
        ],
    }
    counts = {}
    for name, requests in tasks.items():
        ours = theirs = reads = 0
        lengths = []
        encoded = {}
        for i, (context, choices) in enumerate(requests):
            ctx, conts = encode_choices(backend.tokenizer, context, choices)
            encoded[i] = (ctx, conts)
            lengths.append(len(ctx) + sum(len(c) - 1 for c in conts))
            reads += 1 + sum(len(c) - 1 for c in conts)
            # lm_eval runs (context + continuation)[:-1] per choice, once per context for one-token choices
            one_token = all(len(c) == 1 for c in conts)
            theirs += len(ctx) if one_token else sum(len(ctx) + len(c) - 1 for c in conts)
        ours = sum(lengths)
        # the backend's own batches of rows without a shared prefix: longest first, each padded to its first
        batches = scoring_batches(encoded, 0, batch_size=backend.batch_size)
        padded = sum(lengths[batch[0]] * len(batch) for batch in batches)
        ceiling = theirs * (decoder + projection) / (ours * decoder + reads * projection)
        print(
            f"{name}: {len(requests)} rows; tokens lm_eval {theirs}, evalkit {ours}; evalkit projects {reads} "
            f"positions; work ratio {ceiling:.2f}x; evalkit padding {1 - ours / padded:.1%}"
        )
        counts[name] = {
            "rows": len(requests),
            "lm_eval_tokens": theirs,
            "evalkit_tokens": ours,
            "evalkit_projected": reads,
            "work_ratio": ceiling,
            "evalkit_padding": 1 - ours / padded,
        }
    return counts


if __name__ == "__main__":
    main()

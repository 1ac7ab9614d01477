"""The work each tool must do on the lm-evaluation-harness benchmark's classify rows (see BENCHMARKS.md).

    .venv/bin/python benchmarks/work_counts.py

Counts, with the model's tokenizer only (no forward pass): the tokens each tool runs through the
decoder, the positions evalkit projects onto the vocabulary, the ratio of multiply-adds at equal speed
(the ceiling of the speed-up), and the padding share of evalkit's scoring batches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
SST2_PROMPT = "\nQuestion: Is this sentence positive or negative?\nAnswer:"


def rows(name: str, limit: int | None) -> list[dict]:
    with (SHARED / name / "data.jsonl").open() as f:
        return [json.loads(line) for line in f][:limit]


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evalkit.backends.hf import HFBackend, encode_choices
    from evalkit.models import resolve_model

    model = resolve_model("smollm2-135m-instruct")
    backend = HFBackend(model.path, fingerprint=model.fingerprint, lazy=True)
    config = json.loads((model.path / "config.json").read_text())
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    decoder = 2 * 106.2e6  # multiply-adds x 2 per token through the decoder (non-embedding parameters)
    projection = 2 * hidden * vocab  # per position projected onto the vocabulary
    tasks = {
        "arc_easy": [
            (f"Question: {r['question']}\nAnswer:", [" " + c for c in r["choices"]]) for r in rows("arc_easy_test", 500)
        ],
        "sst2": [(r["text"] + SST2_PROMPT, [" negative", " positive"]) for r in rows("sst2_validation", None)],
    }
    for name, requests in tasks.items():
        ours = theirs = reads = 0
        lengths = []
        for context, choices in requests:
            ctx, conts = encode_choices(backend.tokenizer, context, choices)
            lengths.append(len(ctx) + sum(len(c) - 1 for c in conts))
            reads += 1 + sum(len(c) - 1 for c in conts)
            # lm_eval runs (context + continuation)[:-1] per choice, once per context for one-token choices
            one_token = all(len(c) == 1 for c in conts)
            theirs += len(ctx) if one_token else sum(len(ctx) + len(c) - 1 for c in conts)
        ours = sum(lengths)
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        padded = sum(lengths[batch[0]] * len(batch) for batch in backend._batches(order, lengths))
        ceiling = theirs * (decoder + projection) / (ours * decoder + reads * projection)
        print(
            f"{name}: {len(requests)} rows; tokens lm_eval {theirs}, evalkit {ours}; evalkit projects {reads} "
            f"positions; work ratio {ceiling:.2f}x; evalkit padding {1 - ours / padded:.1%}"
        )


if __name__ == "__main__":
    main()

"""The requests lm-eval itself sends for five standard tasks, as golden fixtures: `lm-eval run --model dummy
--log_samples` on the first 50 documents of each, with each task's dataset pointed at local files through a
task YAML that includes lm-eval's own (`include:` and `dataset_kwargs`, lm-eval's mechanism, not evalkit's).

The fixtures keep each request's SHA-256 (its context and continuation, or generation settings) and
lengths, not the text: the data sets' text stays out of the repository. tests/test_lm_eval.py sends the same
tasks through an evalkit suite and compares byte for byte.

Regenerate (the data sets from ../shared/datasets/hub_schema): .venv/bin/python -m tests.lm_eval_prompts
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "golden" / "lm_eval_requests.json"
MIRROR = ROOT.parent / "shared" / "datasets" / "hub_schema"
OWN = ROOT / "tests" / "data" / "lm_eval"
ROWS = 50


@dataclass(frozen=True)
class Case:
    task: str  # lm-eval's task
    files: dict[str, str]  # split: file, relative to the mirror (or tests/data/lm_eval with own=True)
    num_fewshot: int
    own: bool = False

    def paths(self) -> dict[str, str]:
        base = OWN if self.own else MIRROR
        return {split: str(base / file) for split, file in self.files.items()}


ARC_EASY = "allenai/ai2_arc/ARC-Easy/test.jsonl"
GSM8K = "openai/gsm8k/main/test.jsonl"
CASES = [
    Case("arc_easy", {"test": ARC_EASY}, 0),
    Case("arc_challenge", {"test": "allenai/ai2_arc/ARC-Challenge/test.jsonl"}, 0),
    Case("sst2", {"validation": "nyu-mll/glue/sst2/validation.jsonl"}, 0),
    # the mirror holds gsm8k's test split only: its 5 demos are drawn from the same file, on both sides alike
    Case("gsm8k", {"train": GSM8K, "test": GSM8K}, 5),
    # a project-written MMLU-schema subject (arithmetic); lm-eval's first_n sampler takes the dev split's 5
    Case("mmlu_anatomy", {"dev": "mmlu_schema_dev.jsonl", "test": "mmlu_schema_test.jsonl"}, 5, own=True),
]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def request_key(request_type: str, args: tuple) -> list:
    """A request as the fixtures keep it: its type, and each argument's SHA-256 and length."""
    shown = [a if isinstance(a, str) else json.dumps(a, sort_keys=True) for a in args]
    return [request_type, *[[digest(a), len(a)] for a in shown]]


def _task_yaml(case: Case, folder: Path) -> Path:
    import lm_eval.tasks

    index = lm_eval.tasks.TaskManager().task_index
    splits = {"training_split": None, "validation_split": None, "test_split": None}
    for split in case.files:
        key = {"train": "training_split", "validation": "validation_split", "test": "test_split"}.get(split)
        if key is not None:
            splits[key] = split
    lines = [
        f"include: {index[case.task].yaml_path}",
        f"task: {case.task}_local",
        "dataset_path: json",
        "dataset_name: null",
        f"dataset_kwargs: {json.dumps({'data_files': case.paths()})}",
        *[f"{k}: {json.dumps(v)}" for k, v in splits.items()],
    ]
    path = folder / f"{case.task}_local.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def lm_eval_requests(case: Case) -> list[list]:
    """The requests of lm-eval's dummy model for ``case``, from its logged samples, in document order."""
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        _task_yaml(case, folder)
        out = folder / "out"
        command = [
            str(Path(sys.executable).parent / "lm-eval"), "run", "--model", "dummy", "--tasks", f"{case.task}_local",
            "--include_path", str(folder), "--limit", str(ROWS), "--num_fewshot", str(case.num_fewshot),
            "--log_samples", "--output_path", str(out),
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        subprocess.run(command, check=True, env=env, capture_output=True)
        (samples,) = out.rglob(f"samples_{case.task}_local_*.jsonl")
        requests, seen = [], set()
        for line in samples.read_text(encoding="utf-8").splitlines():
            sample = json.loads(line)
            if sample["doc_id"] in seen:  # the same document under another filter (gsm8k's two)
                continue
            seen.add(sample["doc_id"])
            for args in sample["arguments"].values() if isinstance(sample["arguments"], dict) else sample["arguments"]:
                values = tuple(args.values()) if isinstance(args, dict) else tuple(args)
                kind = "generate_until" if isinstance(values[1], dict) else "loglikelihood"
                requests.append((sample["doc_id"], request_key(kind, values)))
        return [key for _, key in sorted(requests, key=lambda r: r[0])]  # stable: a document's own order kept


def main() -> None:
    fixtures = {
        case.task: {"num_fewshot": case.num_fewshot, "rows": ROWS, "requests": lm_eval_requests(case)} for case in CASES
    }
    import lm_eval

    lines = [f'{{"lm_eval": {json.dumps(lm_eval.__version__)}, "tasks": {{']
    for n, (task, fixture) in enumerate(fixtures.items()):
        lines.append(f' "{task}": {{"num_fewshot": {fixture["num_fewshot"]}, "rows": {fixture["rows"]}, "requests": [')
        lines += [f"  {json.dumps(r)}," for r in fixture["requests"][:-1]] + [
            f"  {json.dumps(fixture['requests'][-1])}"
        ]
        lines.append(" ]}" + ("," if n < len(fixtures) - 1 else ""))
    FIXTURES.write_text("\n".join([*lines, "}}"]) + "\n", encoding="utf-8")  # one request a line
    print(f"wrote {FIXTURES}: " + ", ".join(f"{t} {len(f['requests'])} requests" for t, f in fixtures.items()))


if __name__ == "__main__":
    main()

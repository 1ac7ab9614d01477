"""The run record: per-candidate results and per-example rows, written atomically as JSON/JSONL."""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit.atomic import replace_directory

SCHEMA_VERSION = 1


@dataclass
class ExampleResult:
    id: str
    row: int
    prompt: str
    output: str  # the generated text, or the chosen label
    target: Any
    correct: bool
    score: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CandidateResult:
    suite: str
    candidate: str
    suite_path: str
    task: str
    n: int
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    thresholds: dict[str, str]
    failures: list[str]
    wall_s: float
    tokens: dict[str, int]
    model: str
    model_fingerprint: str
    dataset_hash: str
    template_sha256: str
    examples: list[ExampleResult] = field(repr=False, default_factory=list)
    adapter: dict[str, Any] | None = None  # the LoRA adapter behind this candidate (see evalkit.train)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    @property
    def cost(self) -> dict[str, float]:
        """What one example costs: prompt and output tokens, and wall time, averaged over the run."""
        n = max(1, self.n)
        cost: dict[str, float] = {
            "prompt_tokens_per_example": round(self.tokens["prompt"] / n, 1),
            "output_tokens_per_example": round(self.tokens["output"] / n, 1),
            "ms_per_example": round(1000 * self.wall_s / n, 1),
        }
        if self.adapter is not None:
            cost["train_s"] = self.adapter["train_s"]
            cost["trainable_parameters"] = self.adapter["trainable_parameters"]
            cost["adapter_bytes"] = self.adapter["adapter_bytes"]
        return cost

    def header(self) -> dict[str, Any]:
        """Everything but the per-example rows (what results.json holds per candidate)."""
        data = asdict(self)
        data.pop("examples")
        data["ci95"] = {k: list(v) for k, v in self.ci95.items()}
        data["passed"] = self.passed
        data["cost"] = self.cost
        return data


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def run_header(root: Path, started: _dt.datetime, finished: _dt.datetime) -> dict[str, Any]:
    from evalkit import __version__

    return {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "git_commit": _git_commit(root),
        "evalkit_version": __version__,
    }


def write_run(directory: Path, header: dict[str, Any], results: list[CandidateResult]) -> Path:
    """Write ``results.json`` and ``examples.jsonl`` into ``directory``, replacing it atomically."""
    models = sorted({(r.model, r.model_fingerprint) for r in results})
    record = {
        "schema_version": SCHEMA_VERSION,
        "run": {**header, "models": [{"name": n, "fingerprint": f} for n, f in models]},
        "suites": {},
    }
    for r in results:
        record["suites"].setdefault(r.suite, {})[r.candidate] = r.header()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        (tmp / "results.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        with (tmp / "examples.jsonl").open("w", encoding="utf-8") as out:
            for r in results:
                for ex in r.examples:
                    out.write(json.dumps({"suite": r.suite, "candidate": r.candidate, **asdict(ex)},
                                         ensure_ascii=False) + "\n")
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory

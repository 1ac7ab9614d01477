"""The run record: per-candidate results and per-example rows, written atomically as JSON/JSONL."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from evalkit.record import (
    READABLE_RUN_VERSIONS,
    RUN_SCHEMA_VERSION,
    Comparison,
    ExampleRow,
    RunRecord,
    parse_json,
    schema_problem,
)
from evalkit.stats import mcnemar_exact
from evalkit.verdict import Verdict

SCHEMA_VERSION = RUN_SCHEMA_VERSION
READABLE_VERSIONS = READABLE_RUN_VERSIONS


@dataclass(slots=True)  # one per row and candidate: no per-instance dict
class ExampleResult:
    id: str
    row: int
    prompt: str
    output: str  # the generated text, or the chosen label
    target: Any
    correct: bool
    score: float
    details: dict[str, Any] = field(default_factory=dict)
    pass_rate: float | None = None  # with `repeats:`, the share of repeats that were correct


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
    baseline: Comparison | None = None  # the comparison with the baseline (see evalkit.compare)
    repeats: int = 1  # samples per example (sampled generation)
    prompts_sha256: str | None = None  # every rendered prompt: catches few-shot, chat and system changes too
    robustness: dict[str, Any] | None = None  # perturbation search (see evalkit.robustness)
    compute_s: float | None = None  # model time of this candidate's answers, measured when each was computed
    cache: dict[str, Any] | None = None  # result-cache hits, misses and why (see evalkit.cache)
    judge: dict[str, Any] | None = None  # a model-graded scorer's identity and measured agreement (evalkit.judge)
    errors: dict[str, Any] | None = None  # where it errs: classify's confusion matrix, generate's failure shapes
    expected_failure: str | None = None  # the reason of the candidate's xfail marker: it is expected to fail
    prompt_search: dict[str, Any] | None = None  # its prompt search: dev score, optimism gap (evalkit.prompt_search)

    def to_dict(self) -> dict[str, Any]:
        """The whole result as JSON-ready values (as pytest-xdist workers hand them over)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["examples"] = [_example_dict(e) for e in self.examples]
        data["baseline"] = None if self.baseline is None else self.baseline.as_json()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateResult:
        """A result from :meth:`to_dict` of one."""
        data = dict(data)
        data["examples"] = [ExampleResult(**e) for e in data["examples"]]
        data["ci95"] = {k: tuple(v) for k, v in data["ci95"].items()}
        if data.get("baseline") is not None:
            data["baseline"] = Comparison.model_validate(data["baseline"])
        return cls(**data)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    @property
    def cost(self) -> dict[str, float]:
        """What one example costs: prompt and output tokens, and model time, averaged over the run.

        Model time is measured when an answer is computed and kept with it in the result cache, so a
        candidate costs the same whether this run computed its answers or found them cached."""
        n = max(1, self.n)
        seconds = self.compute_s if self.compute_s is not None else self.wall_s
        cost: dict[str, float] = {
            "prompt_tokens_per_example": round(self.tokens["prompt"] / n, 1),
            "output_tokens_per_example": round(self.tokens["output"] / n, 1),
            "ms_per_example": round(1000 * seconds / n, 1),
        }
        if self.adapter is not None:
            cost["train_s"] = self.adapter["train_s"]
            cost["trainable_parameters"] = self.adapter["trainable_parameters"]
            cost["adapter_bytes"] = self.adapter["adapter_bytes"]
        if self.prompt_search is not None:  # a one-time cost, like training
            cost["search_s"] = self.prompt_search["search_s"]
        return cost

    @property
    def verdict(self) -> Verdict:
        """Whether it passed, and what decided it (as every report says it)."""
        return Verdict.of(
            {"failures": self.failures, "baseline": self.comparison_json, "expected_failure": self.expected_failure}
        )

    @property
    def comparison_json(self) -> dict[str, Any] | None:
        """The comparison with the baseline as results.json holds it (None: nothing compared)."""
        return None if self.baseline is None else self.baseline.as_json()

    def hashes(self) -> dict[str, str | None]:
        """What produced this result, by content hash: dataset, template, prompts, model, adapter, judge."""
        return hashes_of(
            {
                "dataset_hash": self.dataset_hash,
                "template_sha256": self.template_sha256,
                "prompts_sha256": self.prompts_sha256,
                "model_fingerprint": self.model_fingerprint,
                "adapter": self.adapter,
                "judge": self.judge,
            }
        )

    def header(self) -> dict[str, Any]:
        """Everything but the per-example rows (what results.json holds per candidate).

        Built in time independent of the rows: the examples are not visited, and the nested values (metrics,
        the comparison, the adapter's curves, ...) are the result's own, not copies, so a reader of the
        header must not change them."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "examples"}
        data["baseline"] = self.comparison_json
        data["ci95"] = {k: list(v) for k, v in self.ci95.items()}
        data["passed"] = self.passed
        data["cost"] = self.cost
        return data


def hashes_of(header: Mapping[str, Any]) -> dict[str, str | None]:
    """The hashes that identify what produced a candidate's result (from a results.json entry)."""
    adapter = header.get("adapter") or {}
    judge = header.get("judge") or {}
    hashes = {
        "dataset": header.get("dataset_hash"),
        "template": header.get("template_sha256"),
        "prompts": header.get("prompts_sha256"),
        "model": header.get("model_fingerprint"),
        "adapter": adapter.get("content_hash"),
    }
    if judge.get("sha256"):  # only model-graded suites name a judge (older baselines have no such key)
        hashes["judge"] = judge["sha256"]
    return hashes


def _side(result: CandidateResult) -> dict[str, Any]:
    side: dict[str, Any] = {
        "candidate": result.candidate,
        "accuracy": result.accuracy,
        "ci95": list(result.ci95["accuracy"]),
        "search_s": None if result.prompt_search is None else result.prompt_search["search_s"],
    }
    if result.adapter is not None:
        side["train_s"] = result.adapter["train_s"]
    return side


def _best(results: list[CandidateResult]) -> CandidateResult:
    return max(results, key=lambda r: (r.accuracy, r.candidate))


def decisions(results: Iterable[CandidateResult]) -> dict[str, dict[str, Any]]:
    """Prompt or fine-tune on equal footing, per suite that has both a prompt-only candidate and an adapter
    candidate: the best of each (by accuracy), the exact McNemar test on the rows only one of them got
    right, and the one-time cost of each (training, a prompt search)."""
    by_suite: dict[str, list[CandidateResult]] = {}
    for r in results:
        if "accuracy" in r.metrics:
            by_suite.setdefault(r.suite, []).append(r)
    found = {}
    for suite, rows in by_suite.items():
        prompts = [r for r in rows if r.adapter is None]
        adapters = [r for r in rows if r.adapter is not None]
        if not prompts or not adapters:
            continue
        prompt, adapter = _best(prompts), _best(adapters)
        right = {e.id: e.correct for e in prompt.examples}
        shared = [(right[e.id], e.correct) for e in adapter.examples if e.id in right]
        prompt_only = sum(p and not a for p, a in shared)
        adapter_only = sum(a and not p for p, a in shared)
        found[suite] = {
            "best_prompt": _side(prompt),
            "best_adapter": _side(adapter),
            "shared": len(shared),
            "prompt_only_right": prompt_only,
            "adapter_only_right": adapter_only,
            "p_value": mcnemar_exact(prompt_only, adapter_only),
        }
    return found


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def run_header(root: Path, started: _dt.datetime, finished: _dt.datetime) -> dict[str, Any]:
    from evalkit.version import __version__

    return {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "git_commit": _git_commit(root),
        "evalkit_version": __version__,
    }


def build_record(header: dict[str, Any], results: list[CandidateResult], prices: Any = None) -> dict[str, Any]:
    """The run record (``results.json``): the run's header and every candidate's header, by suite; with
    ``prices`` (a :class:`evalkit.costs.CostModel`), what each candidate costs and when adapters pay back."""
    models = sorted({(r.model, r.model_fingerprint) for r in results})
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run": {**header, "models": [{"name": n, "fingerprint": f} for n, f in models]},
        "suites": {},
    }
    for r in results:
        record["suites"].setdefault(r.suite, {})[r.candidate] = r.header()
    found = decisions(results)
    if found:
        record["decisions"] = found
    if prices is not None:
        from evalkit.costs import economics

        record["costs"] = economics(record, prices)
    return record


class ExampleRows:
    """The rows of ``examples.jsonl``, one per example and candidate, made as they are read: each pass over
    them builds one row at a time, so writing 20,000 of them never holds 20,000 row dicts at once."""

    def __init__(self, results: Iterable[CandidateResult]) -> None:
        self.results = list(results)

    def __len__(self) -> int:
        return sum(len(r.examples) for r in self.results)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for r in self.results:
            for ex in r.examples:
                yield {"suite": r.suite, "candidate": r.candidate, **_example_dict(ex)}

    def by_candidate(self) -> dict[tuple[str, str], ExampleView]:
        """Each candidate's rows by example id, made when read (what a report looks up and iterates)."""
        return {(r.suite, r.candidate): ExampleView(r) for r in self.results}


class ExampleView(Mapping[str, dict[str, Any]]):
    """One candidate's ``examples.jsonl`` rows by example id; each row is made when it is read, so a report
    that pages through 20,000 examples never holds 20,000 row dicts."""

    def __init__(self, result: CandidateResult) -> None:
        self.result = result
        self._index = {str(e.id): i for i, e in enumerate(result.examples)}

    def __getitem__(self, example_id: str) -> dict[str, Any]:
        example = self.result.examples[self._index[example_id]]
        return {"suite": self.result.suite, "candidate": self.result.candidate, **_example_dict(example)}

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _example_dict(example: ExampleResult) -> dict[str, Any]:
    """An example as a plain dict, without ``asdict``'s deep copy (its details are shared, not copied)."""
    return {
        "id": example.id,
        "row": example.row,
        "prompt": example.prompt,
        "output": example.output,
        "target": example.target,
        "correct": example.correct,
        "score": example.score,
        "details": example.details,
        "pass_rate": example.pass_rate,
    }


def example_rows(results: Iterable[CandidateResult]) -> ExampleRows:
    """The rows of ``examples.jsonl``: one per example and candidate (see :class:`ExampleRows`)."""
    return ExampleRows(results)


def rows_by_candidate(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """``examples.jsonl`` rows grouped by (suite, candidate), in file order."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["suite"], row["candidate"]), []).append(row)
    return grouped


def run_order(run_id: str) -> tuple[str, int]:
    """Sort key of a run id: its start time, then its sequence within that second (``...Z``, ``...Z-2``, ...)."""
    base, _, n = run_id.partition("-")
    return base, int(n) if n.isdigit() else 1


def new_run_id(runs_dir: Path, started: _dt.datetime) -> str:
    """A sortable id from the start time (UTC), unique within ``runs_dir`` and after every run that
    started in the same second (even one since pruned: an id is never reused out of order)."""
    base = started.astimezone(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    taken = [run_order(p.name) for p in runs_dir.glob(f"{base}*")] if runs_dir.is_dir() else []
    n = max((seq for b, seq in taken if b == base), default=0) + 1
    return base if n == 1 else f"{base}-{n}"


_DAMAGED = "the file is damaged; rerun the suites to write it again"
_NOT_A_RUN = "point at a folder written by evalkit (reports/latest or reports/runs/<run id>)"


def _read_record(results_path: Path) -> dict[str, Any]:
    """``results.json``, parsed and checked against the run record's schema."""
    from evalkit.errors import EvalkitError

    try:
        text = results_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalkitError(f"cannot read the run record: {exc.strerror}", path=results_path, fix=_NOT_A_RUN) from None
    record = parse_json(text, path=results_path, what="run record", fix=_DAMAGED)
    version = record.get("schema_version") if isinstance(record, dict) else None
    if version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS[:-1])) + f" and {READABLE_VERSIONS[-1]}"
        raise EvalkitError(
            f"the run record has schema_version {version!r}; this evalkit reads {readable}",
            path=results_path,
            fix="rerun the suites with this evalkit version, or upgrade evalkit",
        )
    problem = schema_problem(RunRecord, record) or next(
        (
            f"suites/{suite}/{name}/ci95: no interval for metric '{metric}'"
            for suite, candidates in record["suites"].items()
            for name, entry in candidates.items()
            for metric in entry["metrics"]
            if metric not in entry["ci95"]
        ),
        None,
    )
    if problem is not None:
        raise EvalkitError(f"the run record is not one evalkit wrote: at {problem}", path=results_path, fix=_DAMAGED)
    return record


def _read_rows(folder: Path) -> list[dict[str, Any]]:
    """The rows of ``examples.jsonl``, each checked against the example row's schema."""
    from evalkit.errors import EvalkitError

    rows = []
    examples_path = folder / "examples.jsonl"
    try:
        with examples_path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise EvalkitError(
                        f"line is not valid JSON: {getattr(exc, 'msg', exc)}",
                        path=examples_path,
                        line=number,
                        fix=_DAMAGED,
                    ) from None
                problem = schema_problem(ExampleRow, row)
                if problem is not None:
                    raise EvalkitError(
                        f"not an example row evalkit wrote: at {problem}", path=examples_path, line=number, fix=_DAMAGED
                    )
                rows.append(row)
    except FileNotFoundError:
        raise EvalkitError("the run folder has no examples.jsonl", path=folder, fix=_NOT_A_RUN) from None
    return rows


def read_results(folder: Path) -> dict[str, Any]:
    """A run folder's results.json, checked for shape (its example rows are not read)."""
    return _read_record(folder / "results.json")


def load_run(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a run folder (or its results.json): the record and its example rows, checked for shape."""
    folder = path if path.is_dir() else path.parent
    return _read_record(folder / "results.json"), _read_rows(folder)

"""The run record: per-candidate results and per-example rows, written atomically as JSON/JSONL."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from evalkit.record import (
    READABLE_RUN_VERSIONS,
    RUN_SCHEMA_VERSION,
    AdapterInfo,
    CacheInfo,
    CandidateEntry,
    Comparison,
    Decision,
    DecisionSide,
    ErrorAnalysis,
    ExampleRow,
    JudgeInfo,
    Latency,
    LmEvalInfo,
    ModelInfo,
    PairCheck,
    PromptSearchInfo,
    RetentionCheck,
    Robustness,
    RunInfo,
    RunRecord,
    content_hashes,
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
    details: MutableMapping[str, Any] = field(default_factory=dict)  # a dict, or a compact mapping made when read
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
    adapter: AdapterInfo | None = None  # the LoRA adapter behind this candidate (see evalkit.train)
    baseline: Comparison | None = None  # the comparison with the baseline (see evalkit.compare)
    repeats: int = 1  # samples per example (sampled generation)
    prompts_sha256: str | None = None  # every rendered prompt: catches few-shot, chat and system changes too
    task_sha256: str | None = None  # the task's settings: decoding (max_new_tokens, stop...), scorer, choices
    robustness: Robustness | None = None  # perturbation search (see evalkit.robustness)
    compute_s: float | None = None  # model time of this candidate's answers, measured when each was computed
    cache: CacheInfo | None = None  # result-cache hits, misses and why (see evalkit.cache)
    judge: JudgeInfo | None = None  # a model-graded scorer's identity and measured agreement (evalkit.judge)
    errors: ErrorAnalysis | None = None  # where it errs: classify's confusion matrix, generate's failure shapes
    expected_failure: str | None = None  # the reason of the candidate's xfail marker: it is expected to fail
    prompt_search: PromptSearchInfo | None = None  # its prompt search: dev score, optimism gap (evalkit.prompt_search)
    compared: list[PairCheck] | None = None  # its `compare:` checks against other runs (evalkit.pairs)
    latency: Latency | None = None  # a served run's latency and throughput (evalkit.latency)
    lm_eval: LmEvalInfo | None = None  # an lm-eval task's sources and aggregates (evalkit.harness)
    retention: list[RetentionCheck] | None = None  # what its adapter forgot (evalkit.harness.retention)

    def __setattr__(self, name: str, value: Any) -> None:
        # a record given as JSON values (a hand-built result, a worker's hand-off) is kept typed
        model = _RECORD_FIELDS.get(name)
        if model is not None and isinstance(value, Mapping):
            value = model.model_validate(value)
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """The whole result as JSON-ready values (as pytest-xdist workers hand them over)."""
        data = self.entry().as_json()
        data["examples"] = [_example_dict(e) for e in self.examples]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateResult:
        """A result from :meth:`to_dict` of one."""
        entry = CandidateEntry.model_validate(data)
        values = {f.name: getattr(entry, f.name) for f in fields(cls) if f.name != "examples"}
        values["ci95"] = {k: tuple(v) for k, v in values["ci95"].items()}
        return cls(**values, examples=[ExampleResult(**e) for e in data["examples"]])

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
        adapter = self.adapter
        if adapter is not None and adapter.train_s is not None:
            cost["train_s"] = adapter.train_s
            cost["trainable_parameters"] = adapter.trainable_parameters or 0
            cost["adapter_bytes"] = adapter.adapter_bytes or 0
        if self.prompt_search is not None:  # a one-time cost, like training
            cost["search_s"] = self.prompt_search.search_s
        return cost

    @property
    def verdict(self) -> Verdict:
        """Whether it passed, and what decided it (as every report says it)."""
        return Verdict.decide(self.failures, self.baseline, self.expected_failure)

    def hashes(self) -> dict[str, str | None]:
        """What produced this result, by content hash: dataset, template, prompts, model, adapter, judge."""
        return content_hashes(self)

    def entry(self) -> CandidateEntry:
        """The result without its per-example rows: what results.json holds per candidate.

        Built in time independent of the rows: the examples are not visited, and the nested records (the
        comparison, the adapter's curves, ...) are the result's own, not copies."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "examples"}
        return CandidateEntry.model_construct(
            **values, passed=self.passed, cost=self.cost, _fields_set=set(values) | {"passed", "cost"}
        )


_RECORD_FIELDS: dict[str, type[BaseModel]] = {
    "adapter": AdapterInfo,
    "baseline": Comparison,
    "robustness": Robustness,
    "cache": CacheInfo,
    "judge": JudgeInfo,
    "errors": ErrorAnalysis,
    "prompt_search": PromptSearchInfo,
    "latency": Latency,
    "lm_eval": LmEvalInfo,
}


def _side(result: CandidateResult) -> DecisionSide:
    return DecisionSide(
        candidate=result.candidate,
        accuracy=result.accuracy,
        ci95=result.ci95["accuracy"],
        search_s=None if result.prompt_search is None else result.prompt_search.search_s,
        **({"train_s": result.adapter.train_s} if result.adapter is not None else {}),
    )


def _best(results: list[CandidateResult]) -> CandidateResult:
    return max(results, key=lambda r: (r.accuracy, r.candidate))


def decisions(results: Iterable[CandidateResult]) -> dict[str, Decision]:
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
        found[suite] = Decision(
            best_prompt=_side(prompt),
            best_adapter=_side(adapter),
            shared=len(shared),
            prompt_only_right=prompt_only,
            adapter_only_right=adapter_only,
            p_value=mcnemar_exact(prompt_only, adapter_only),
        )
    return found


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def run_info(root: Path, started: _dt.datetime, finished: _dt.datetime) -> RunInfo:
    """The run's header: when it ran, from which commit, with which evalkit."""
    from evalkit.version import __version__

    return RunInfo(
        started=started.isoformat(timespec="seconds"),
        finished=finished.isoformat(timespec="seconds"),
        git_commit=_git_commit(root),
        evalkit_version=__version__,
    )


def build_record(run: RunInfo | Mapping[str, Any], results: list[CandidateResult], prices: Any = None) -> RunRecord:
    """The run record (``results.json``): the run's header (as JSON values, or typed) and every candidate's
    entry, by suite; with ``prices`` (a :class:`evalkit.costs.CostModel`), what each candidate costs and when
    adapters pay back."""
    if not isinstance(run, RunInfo):
        run = RunInfo.model_validate(run)
    models = sorted({(r.model, r.model_fingerprint) for r in results})
    run = run.model_copy(update={"models": [ModelInfo(name=n, fingerprint=f) for n, f in models]})
    suites: dict[str, dict[str, CandidateEntry]] = {}
    for r in results:
        suites.setdefault(r.suite, {})[r.candidate] = r.entry()
    record = RunRecord(schema_version=SCHEMA_VERSION, run=run, suites=suites)
    found = decisions(results)
    if found:
        record.decisions = found
    if prices is not None:
        from evalkit.costs import economics

        record.costs = economics(suites, prices)
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
    """An example as a plain dict, without ``asdict``'s deep copy (details held as a dict are shared, not
    copied; a compact mapping of them is made into one, by its ``as_dict`` where it has one)."""
    details = example.details
    if type(details) is not dict:
        as_dict = getattr(details, "as_dict", None)
        details = as_dict() if as_dict is not None else dict(details)
    return {
        "id": example.id,
        "row": example.row,
        "prompt": example.prompt,
        "output": example.output,
        "target": example.target,
        "correct": example.correct,
        "score": example.score,
        "details": details,
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


def read_results(folder: Path) -> RunRecord:
    """A run folder's results.json, checked for shape (its example rows are not read)."""
    from pydantic import ValidationError

    from evalkit.errors import EvalkitError

    path = folder / "results.json"
    try:
        return RunRecord.model_validate(_read_record(path))
    except ValidationError as exc:  # what a JSON schema cannot say: an integer past what Python reads (1e308)
        error = exc.errors()[0]
        where = "/".join(str(p) for p in error["loc"])
        raise EvalkitError(
            f"the run record is not one evalkit wrote: at {where}: {error['msg']}", path=path, fix=_DAMAGED
        ) from None


def load_run(path: Path) -> tuple[RunRecord, list[dict[str, Any]]]:
    """Read a run folder (or its results.json): the record and its example rows, checked for shape."""
    folder = path if path.is_dir() else path.parent
    return read_results(folder), _read_rows(folder)

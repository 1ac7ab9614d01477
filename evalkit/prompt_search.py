"""The prompt's search, on the trainer's machinery (:mod:`evalkit.study`: Optuna, a seeded TPE sampler, the
median pruner, a stored study): demos, their order, calibration, template and, for generate tasks, the
decoding options, chosen on a dev split of the candidate's few-shot pool.

The golden rows are never part of a search request: trials are scored on dev rows drawn from the pool
(``dev: {fraction, stratify}``), each dev row's demos come from the rest of the pool (so a row is never
a demo for itself), and a pool that shares a row with the golden set is refused before anything runs.
Every trial's answers go through the result cache, keyed by the rendered request, so a resumed or
repeated search recomputes nothing.

The result is an artifact, like an adapter: ``prompts/.search/<suite>/<candidate>.json`` holds the chosen
settings, the demo ids in order, the calibration vector, every trial (its settings, its dev score after
each pruning step, its state) and the content hashes of the space, the pool, the template files and the
model. An evaluation uses it as it is, and searches again only when it is missing or stale (under
``--evalkit-train=auto|never|always``). While a search runs its study is a SQLite file beside the
artifact (``.<candidate>.study-<hash>/``): an interrupted search resumes from it, and it is removed once
the artifact is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.atomic import write_text_atomically
from evalkit.data import Dataset, Row, canonical_json, load_dataset
from evalkit.errors import EvalkitError, shown_path
from evalkit.fewshot import ContextualCalibration, place_of, shared_rows
from evalkit.record import OptimismGap, PromptSearchInfo
from evalkit.spec import PROMPT_SEARCHABLE_GENERATE, SearchRange
from evalkit.stats import wilson_interval
from evalkit.study import finished_trials, open_stored_study, suggest

if TYPE_CHECKING:
    from evalkit.backends.base import Backend
    from evalkit.spec import Candidate, SuiteSpec

ARTIFACT_VERSION = 1
TASK_OPTIONS = tuple(p for p in PROMPT_SEARCHABLE_GENERATE if p != "system")  # options of `task:`, not the candidate
DRAWS_PER_TRIAL = 4  # a search stops after this many draws per trial when its space has fewer configurations
EXPLORE_DRAWS = 64  # random draws to find an untried configuration after a repeat
SAMPLED_FIRST = ("template", "fewshot.k", "fewshot.select")  # what decides whether the other demo options matter
Notify = Callable[[str], None]


class PromptSearchError(EvalkitError):
    """A prompt search that cannot run or be used (a contaminated pool, a stale artifact under `never`)."""


# --------------------------------------------------------------------------- the outcome


@dataclass(frozen=True)
class TrialRecord:
    """One trial: its settings, its dev score after each pruning step, its state and what it cost."""

    number: int
    state: str  # complete or pruned
    params: dict[str, Any]
    steps: list[float]  # the running dev score after each dev chunk (each fold, for cv_accuracy)
    value: float | None  # the final score (complete trials)
    seconds: float | None = None
    retry_of: int | None = None
    same_as: int | None = None  # a repeat of this earlier trial's configuration (not counted, not run)

    @property
    def score(self) -> float | None:
        """The trial's dev score: its final value, or a pruned trial's last step."""
        return self.value if self.value is not None else (self.steps[-1] if self.steps else None)


@dataclass(frozen=True)
class PromptSearchOutcome:
    """What a candidate's prompt search chose and found, read from its artifact: what the reports show
    next to the candidate's golden-set result (the best trial's dev score against the one test read, the
    optimism gap between them, and the search's time as a one-time cost)."""

    suite: str
    candidate: str
    artifact_path: Path
    objective: str
    settings: dict[str, Any]  # the chosen value of every searched option
    demo_ids: list[str] | None  # the chosen demos in order (None: each row's own, `select: nearest`)
    excluded_ids: list[str]  # pool rows held out as the dev split (never demos at test time either)
    calibration: dict[str, Any] | None
    best_trial: int
    dev_accuracy: float
    dev_ci95: tuple[float, float]
    dev_n: int
    trials: list[TrialRecord]
    search_s: float  # every trial's time, over all runs of the search: a one-time cost, like training
    hashes: dict[str, Any]
    searched_now: bool = False

    @property
    def distinct(self) -> list[TrialRecord]:
        """The trials that tried a configuration of their own (a repeat of an earlier one is not counted)."""
        return [t for t in self.trials if t.same_as is None]

    @property
    def trial_scores(self) -> list[float | None]:
        """Each trial's dev score (its last step for a pruned one), in trial order; None for a repeat of an
        earlier trial's configuration (its score is that trial's)."""
        return [None if t.same_as is not None else t.score for t in self.trials]

    def optimism_gap(self, test_accuracy: float, test_ci95: tuple[float, float]) -> OptimismGap:
        """How far the best dev score overstates the golden-set accuracy: dev minus test, with an interval
        from the two intervals' half-widths combined in quadrature (independent samples)."""
        gap = self.dev_accuracy - test_accuracy
        dev_half = (self.dev_ci95[1] - self.dev_ci95[0]) / 2
        test_half = (test_ci95[1] - test_ci95[0]) / 2
        half = (dev_half**2 + test_half**2) ** 0.5
        return OptimismGap(
            dev=round(self.dev_accuracy, 6),
            dev_ci95=(round(self.dev_ci95[0], 6), round(self.dev_ci95[1], 6)),
            test=round(test_accuracy, 6),
            test_ci95=(round(test_ci95[0], 6), round(test_ci95[1], 6)),
            gap=round(gap, 6),
            gap_ci95=(round(gap - half, 6), round(gap + half, 6)),
        )

    def info(self, test_accuracy: float, test_ci95: tuple[float, float]) -> PromptSearchInfo:
        """What a run record keeps of the search (the full trial list stays in the artifact), with the
        optimism gap against the chosen prompt's one read of the golden set."""
        return PromptSearchInfo(
            artifact=str(self.artifact_path),
            objective=self.objective,
            settings=self.settings,
            best_trial=self.best_trial,
            dev_accuracy=self.dev_accuracy,
            dev_ci95=self.dev_ci95,
            dev_n=self.dev_n,
            trials=len(self.distinct),
            pruned=sum(t.state == "pruned" for t in self.distinct),
            trial_scores=self.trial_scores,
            search_s=self.search_s,
            searched_now=self.searched_now,
            optimism=self.optimism_gap(test_accuracy, test_ci95),
        )

    def applied(self, spec: SuiteSpec, candidate: Candidate) -> tuple[SuiteSpec, Candidate]:
        """The suite and candidate with the chosen settings in place (task options such as
        ``max_new_tokens`` on a copy of the suite's task)."""
        return apply_settings(spec, candidate, self.settings)

    def demo_pool(self, pool: Dataset) -> Dataset:
        """The pool the chosen prompt draws its demos from: the searched pool, without the dev rows."""
        excluded = set(self.excluded_ids)
        return _subset(pool, [r for r in pool.rows if r.id not in excluded])


def apply_settings(spec: SuiteSpec, candidate: Candidate, settings: dict[str, Any]) -> tuple[SuiteSpec, Candidate]:
    """``spec`` and ``candidate`` with searched ``settings`` in place."""
    task_values = {k: v for k, v in settings.items() if k in TASK_OPTIONS}
    changed = candidate.with_values({k: v for k, v in settings.items() if k not in TASK_OPTIONS})
    if task_values:
        spec = spec.model_copy(update={"task": spec.task.model_copy(update=task_values)})
    return spec, changed


def _subset(dataset: Dataset, rows: Sequence[Row]) -> Dataset:
    return Dataset(path=dataset.path, rows=tuple(rows), content_hash=dataset.content_hash)


# --------------------------------------------------------------------------- hashes and staleness


def _sha(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def template_paths(candidate: Candidate) -> list[str]:
    """Every template file the search may use (relative to the suite), the candidate's own first."""
    assert candidate.search is not None
    paths = [candidate.prompt] if candidate.prompt else []
    listed = candidate.search.space.get("template")
    for path in listed if isinstance(listed, list) else []:
        if path not in paths:
            paths.append(path)
    return paths


def current_hashes(spec: SuiteSpec, candidate: Candidate, pool: Dataset, model: str) -> dict[str, Any]:
    """What the search's result depends on: the space (with the candidate's and task's other options),
    the pool, every template file and the model (with its adapter)."""
    assert candidate.search is not None
    space = {
        "search": candidate.search.model_dump(exclude={"artifact"}),
        # the model is hashed on its own (its fingerprint, below), as it was before candidates named one
        "candidate": candidate.model_dump(exclude={"search", "markers", "adapter", "model"}),
        "task": spec.task.model_dump(),
    }
    templates = {}
    for relative in template_paths(candidate):
        path = (spec.path.parent / relative).resolve()
        templates[relative] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
    if candidate.template:
        templates["<inline>"] = hashlib.sha256(candidate.template.encode()).hexdigest()[:16]
    return {"space": _sha(space), "pool": pool.content_hash, "templates": templates, "model": model}


def stale_reason(artifact: dict[str, Any] | None, hashes: dict[str, Any]) -> str | None:
    """Why a stored search no longer describes the candidate (None: it does)."""
    if artifact is None:
        return "it has not been searched yet"
    if artifact.get("version") != ARTIFACT_VERSION:
        return f"its artifact has version {artifact.get('version')}, this evalkit writes {ARTIFACT_VERSION}"
    stored = artifact.get("hashes") or {}
    reasons = []
    if stored.get("space") != hashes["space"]:
        reasons.append("the search space or the candidate's options changed")
    if stored.get("pool") != hashes["pool"]:
        reasons.append("the few-shot pool changed")
    changed = sorted(
        name
        for name in {*stored.get("templates", {}), *hashes["templates"]}
        if stored.get("templates", {}).get(name) != hashes["templates"].get(name)
    )
    if changed:
        reasons.append(f"template {', '.join(changed)} changed")
    if stored.get("model") != hashes["model"]:
        reasons.append("the model changed")
    return " and ".join(reasons) or None


def read_artifact(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def outcome_of(artifact: dict[str, Any], path: Path, *, searched_now: bool = False) -> PromptSearchOutcome:
    best = artifact["best"]
    return PromptSearchOutcome(
        suite=artifact["suite"],
        candidate=artifact["candidate"],
        artifact_path=path,
        objective=artifact["objective"],
        settings=dict(artifact["settings"]),
        demo_ids=artifact["demo_ids"],
        excluded_ids=list(artifact["excluded_ids"]),
        calibration=artifact.get("calibration"),
        best_trial=best["trial"],
        dev_accuracy=best["dev_accuracy"],
        dev_ci95=(best["dev_ci95"][0], best["dev_ci95"][1]),
        dev_n=best["dev_n"],
        trials=[TrialRecord(**t) for t in artifact["trials"]],
        search_s=artifact["timing"]["search_s"],
        hashes=artifact["hashes"],
        searched_now=searched_now,
    )


def search_outcome(spec: SuiteSpec, candidate: str) -> PromptSearchOutcome | None:
    """The stored outcome of a candidate's prompt search (None: the candidate has no search, or its
    artifact is not written yet): what reports read next to the candidate's result."""
    cand = spec.candidates.get(candidate)
    if cand is None or cand.search is None:
        return None
    path = cand.search_artifact_path(spec.path, spec.name)
    artifact = read_artifact(path)
    return outcome_of(artifact, path) if artifact is not None else None


# --------------------------------------------------------------------------- the golden set stays locked


def check_pool_contamination(spec: SuiteSpec, candidate: Candidate, pool: Dataset, golden: Dataset) -> None:
    """Refuses a pool that shares a row with the golden set (the same input text, ids and answers aside):
    a search would then read golden rows, and a demo could be the answer to its own question."""
    shared = shared_rows(pool.rows, golden, spec)
    if not shared:
        return
    shown = "; ".join(f"{place_of(pool, p)} = {place_of(golden, g)}" for p, g in shared[:5])
    more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
    first = shared[0][0]
    raise PromptSearchError(
        f"the few-shot pool of candidate '{candidate.name}' shares {len(shared)} row(s) with the golden set "
        f"({shown}{more}): a prompt search never reads golden rows",
        path=pool.path,
        line=first.line,
        row=None if first.line else first.number,
        fix=f"remove those rows from {pool.path.name} (or from the golden set), then search again",
    )


# --------------------------------------------------------------------------- dev split and folds


def _labels(spec: SuiteSpec, pool: Dataset) -> list[str] | None:
    from evalkit.tasks import task_kind

    kind = task_kind(spec.task.kind)
    if not kind.offers_choices or spec.task.target is None:
        return None
    return [str(kind.gold_text(spec, pool, row)) for row in pool.rows]


def dev_split(rows: int, fraction: float, seed: int, labels: Sequence[str] | None) -> list[int]:
    """Indices of the dev rows: ``fraction`` of the pool drawn with ``seed``, each label keeping its share
    (rounded, at least one row per label with two or more) when ``labels`` are given."""
    rng = random.Random(seed)
    if labels is None:
        wanted = max(1, min(rows - 1, round(rows * fraction)))
        return sorted(rng.sample(range(rows), wanted))
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    picked: list[int] = []
    for _, members in sorted(by_label.items()):
        take = round(len(members) * fraction)
        take = min(len(members) - 1, max(1, take)) if len(members) > 1 else 0
        picked.extend(rng.sample(members, take))
    return sorted(picked)


def folds_of(rows: int, folds: int, seed: int, labels: Sequence[str] | None) -> list[list[int]]:
    """``folds`` disjoint folds covering every row, label by label when ``labels`` are given."""
    rng = random.Random(seed)
    order = rng.sample(range(rows), rows)
    if labels is not None:
        order.sort(key=lambda i: labels[i])  # a stable sort: shuffled within each label
    out: list[list[int]] = [[] for _ in range(folds)]
    for position, i in enumerate(order):
        out[position % folds].append(i)
    return [sorted(f) for f in out]


# --------------------------------------------------------------------------- trials


def _suggest_value(trial: Any, name: str, values: SearchRange | list[Any]) -> Any:
    """A sampled value; list values that are not plain (a `stop` list) are sampled by their JSON text."""
    if isinstance(values, list) and any(isinstance(v, (list, dict)) for v in values):
        return json.loads(trial.suggest_categorical(name, [json.dumps(v) for v in values]))
    return suggest(trial, name, values)


def _accuracy_values(examples: Sequence[Any]) -> list[float]:
    return [e.pass_rate if e.pass_rate is not None else float(e.correct) for e in examples]


@dataclass
class _Search:
    """One candidate's search: the pool and its split, the backend (behind the result cache)."""

    spec: SuiteSpec
    candidate: Candidate
    backend: Backend
    pool: Dataset
    notify: Notify | None
    dev: list[int] = field(default_factory=list)  # dev_accuracy: indices into the pool
    folds: list[list[int]] = field(default_factory=list)  # cv_accuracy
    requests: int = 0
    _shows: dict[str | None, bool] = field(default_factory=dict)  # template -> whether it renders the demos

    @property
    def settings(self) -> Any:
        assert self.candidate.search is not None
        return self.candidate.search

    def split(self) -> None:
        labels = _labels(self.spec, self.pool) if self.settings.dev.stratify is not False else None
        if self.settings.objective == "cv_accuracy":
            self.folds = folds_of(len(self.pool), self.settings.folds, self.settings.seed, labels)
        else:
            self.dev = dev_split(len(self.pool), self.settings.dev.fraction, self.settings.seed, labels)
        if len(self.pool) < 2 or (not self.folds and not self.dev):
            raise PromptSearchError(
                f"the few-shot pool of candidate '{self.candidate.name}' has {len(self.pool)} row(s): too few to "
                "hold out a dev split",
                path=self.pool.path,
                fix="add rows to the pool (a few dozen at least), or lower `search.dev.fraction`",
            )

    def _score(
        self, params: dict[str, Any], dev: list[int], demo_pool: list[int], chunks: int, trial: Any, steps: list[float]
    ) -> tuple[float, int, bool]:
        """Score one configuration on the ``dev`` rows in ``chunks``, reporting the running score after each
        (``trial``: prune when it trails); (score, rows scored, pruned). A kind that decodes its answers
        scores the first chunk alone and the rest in one call: a decoding step costs about the same for a
        few rows as for many, so the pruner looks once, after the first chunk."""
        from evalkit.tasks import prepare, task_kind

        spec, candidate = apply_settings(self.spec, self.candidate, params)
        dev_rows = _subset(self.pool, [self.pool.rows[i] for i in dev])
        pool = _subset(self.pool, [self.pool.rows[i] for i in demo_pool])
        prepared = prepare(spec, candidate, dev_rows, self.backend.apply_chat_template, {}, pool=pool)
        kind = task_kind(spec.task.kind)
        bounds = [round(len(dev) * c / chunks) for c in range(chunks + 1)]
        calls = [[0], list(range(1, chunks))] if kind.decodes else [[c] for c in range(chunks)]
        values: list[float] = []
        for call in calls:
            if not call or bounds[call[0]] == bounds[call[-1] + 1]:
                continue
            first, rows = bounds[call[0]], list(range(bounds[call[0]], bounds[call[-1] + 1]))
            answered = _accuracy_values(kind.score(prepared.subset(rows), self.backend).examples)
            for c in call:
                if bounds[c + 1] == bounds[c]:
                    continue
                values.extend(answered[bounds[c] - first : bounds[c + 1] - first])
                steps.append(sum(values) / len(values))
                if trial is not None:
                    trial.report(steps[-1], step=len(steps))
            if trial is not None and call[-1] + 1 < chunks and trial.should_prune():
                return steps[-1], len(values), True
        return sum(values) / len(values), len(values), False

    def evaluate(
        self, params: dict[str, Any], trial: Any = None, *, chunks: int | None = None
    ) -> tuple[float, list[float], int, bool]:
        """(score, running score after each step, rows scored, pruned) of one configuration; ``chunks``:
        the dev split's steps (default: the search's ``chunks``; 1 evaluates it in one call, as a run does)."""
        steps: list[float] = []
        every = range(len(self.pool))
        if self.folds:
            fold_scores, scored = [], 0
            for f, fold in enumerate(self.folds):
                held = set(fold)
                value, n, _ = self._score(params, fold, [i for i in every if i not in held], 1, None, [])
                fold_scores.append(value)
                scored += n
                steps.append(sum(fold_scores) / len(fold_scores))
                if trial is not None:
                    trial.report(steps[-1], step=f + 1)
                    if f + 1 < len(self.folds) and trial.should_prune():
                        return steps[-1], steps, scored, True
            return steps[-1], steps, scored, False
        held = set(self.dev)
        value, n, pruned = self._score(
            params, self.dev, [i for i in every if i not in held], chunks or self.settings.chunks, trial, steps
        )
        return value, steps, n, pruned

    def sample(self, trial: Any) -> dict[str, Any]:
        """One configuration: the template first, then the demo count and selection, then the rest in the
        space's order. An option that cannot change the requests given those before it is not sampled (the
        demo options of a template that shows no demos or of ``k: 0``, the seed of ``nearest``, the order of
        a single demo), so trials are not spent on configurations that ask the model the same thing; the
        candidate keeps its own value of it."""
        space = self.settings.space
        first = [name for name in SAMPLED_FIRST if name in space]
        params: dict[str, Any] = {}
        for name in first + [n for n in space if n not in first]:
            if self._changes_requests(name, params):
                params[name] = _suggest_value(trial, name, space[name])
        return params

    def _changes_requests(self, name: str, params: dict[str, Any]) -> bool:
        """Whether option ``name`` can change the requests, given the options in ``params`` sampled before."""
        fewshot = self.candidate.fewshot
        if not name.startswith("fewshot.") or fewshot is None:
            return True
        if not self._shows_demos(params.get("template")):
            return False
        k = params.get("fewshot.k", fewshot.k)
        select = params.get("fewshot.select", fewshot.select)
        return name == "fewshot.k" or (
            k > 0 and (name != "fewshot.seed" or select != "nearest") and (name != "fewshot.order" or k > 1)
        )

    def _shows_demos(self, template: str | None) -> bool:
        """Whether a template (a file of the space, else the candidate's own) renders the demos: it reads
        ``examples``, or includes another template, which may."""
        if template not in self._shows:
            from evalkit.tasks import candidate_template

            _, candidate = apply_settings(self.spec, self.candidate, {"template": template} if template else {})
            self._shows[template] = candidate_template(self.spec, candidate).may_read("examples")
        return self._shows[template]

    def _repeat(self, trial: Any, earlier: Any, shown: str) -> float:
        """A trial whose configuration an earlier one tried: its outcome again, without asking the model,
        marked as a repeat (it does not count toward the search's trials)."""
        import optuna

        steps = list(earlier.user_attrs.get("steps", []))
        trial.set_user_attr("same_as", earlier.number)
        trial.set_user_attr("steps", steps)
        trial.set_user_attr("seconds", 0.0)
        if self.notify is not None:
            self.notify(
                f"{self.candidate.name} trial {trial.number + 1}: {shown} -> the configuration of trial "
                f"{earlier.number + 1} again, not counted"
            )
        self._explore_next(trial.study)
        if earlier.state == optuna.trial.TrialState.PRUNED:
            for step, value in enumerate(steps, start=1):
                trial.report(value, step=step)
            raise optuna.TrialPruned()
        return float(earlier.value)

    def _explore_next(self, study: Any) -> None:
        """After a repeat, queue a configuration no trial has tried, drawn at random from the space, as the
        next trial: TPE, having found a good corner of a small sub-space (a template without demos has two
        configurations), would otherwise keep drawing it. Nothing is queued when none is found."""
        import optuna

        if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            return  # one is queued already
        tried = [t.params for t in finished_trials(study)]
        scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=self.settings.seed + len(tried)))
        for _ in range(EXPLORE_DRAWS):
            draw = scratch.ask()
            self.sample(draw)
            if draw.params not in tried:
                study.enqueue_trial(draw.params, user_attrs={"explores_after_repeat": True})
                return

    def objective(self) -> Callable[[Any], float]:
        import optuna

        settings = self.settings
        name = self.candidate.name

        def run(trial: Any) -> float:
            params = self.sample(trial)
            shown = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in params.items())
            finished = finished_trials(trial.study)
            earlier = next((t for t in finished if t.params == trial.params), None)  # the first to try it
            if earlier is not None:
                return self._repeat(trial, earlier, shown)
            done = sum(t.user_attrs.get("same_as") is None for t in finished) + 1
            label = f"{name} trial {trial.number + 1} ({done}/{settings.trials})"
            started = time.perf_counter()
            value, steps, _, pruned = self.evaluate(params, trial)
            trial.set_user_attr("steps", steps)
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            if self.notify is not None:
                bar = "#" * round(20 * min(done, settings.trials) / settings.trials)
                label = f"[{bar:<20}] {label}"
                outcome = (
                    f"pruned after step {len(steps)} at {value:.3f}" if pruned else f"{settings.objective} {value:.3f}"
                )
                self.notify(f"{label}: {shown} -> {outcome} ({time.perf_counter() - started:.1f}s)")
            if pruned:
                raise optuna.TrialPruned()
            return value

        return run


def distinct_trials(study: Any) -> list[Any]:
    """The study's finished trials that tried a configuration of their own (not a repeat of an earlier one)."""
    return [t for t in finished_trials(study) if t.user_attrs.get("same_as") is None]


def _trial_record(trial: Any) -> TrialRecord:
    return TrialRecord(
        number=trial.number,
        state=trial.state.name.lower(),
        params=dict(trial.params),
        steps=list(trial.user_attrs.get("steps", [])),
        value=trial.value,
        seconds=trial.user_attrs.get("seconds"),
        retry_of=trial.user_attrs.get("retry_of"),
        same_as=trial.user_attrs.get("same_as"),
    )


def _final_demos(search: _Search, params: dict[str, Any], excluded: set[str]) -> tuple[list[str] | None, dict | None]:
    """The chosen configuration's demo ids (a fixed set) and its calibration vector, from the pool it
    will draw from at test time; no golden row is read (the content-free inputs carry no row's text)."""
    from evalkit.tasks import prepare

    spec, candidate = apply_settings(search.spec, search.candidate, params)
    pool = _subset(search.pool, [r for r in search.pool.rows if r.id not in excluded])
    probe = _subset(search.pool, search.pool.rows[:1])  # a row whose input fields are blanked out
    prepared = prepare(spec, candidate, probe, search.backend.apply_chat_template, {}, pool=pool)
    demos = prepared.demos
    ids = [r.id for r in demos.fixed] if demos is not None and demos.fixed is not None else None
    calibration: dict[str, Any] | None = None
    if candidate.calibration == "contextual":
        calibration = {"method": "contextual", "content_free": list(ContextualCalibration().content_free)}
        if demos is None or not demos.per_row:
            assert prepared.calibration is not None
            prepared.calibration.measure(prepared, search.backend, [0])
            calibration.update(prepared.calibration.record())
        else:
            calibration["per_row"] = True  # each row's own demo set has its own prior, measured when evaluated
    return ids, calibration


def study_folder(artifact: Path, hashes: dict[str, Any]) -> Path:
    """Where a search's study lives while it runs (tagged with what it searches, so a changed search
    starts a study of its own)."""
    return artifact.parent / f".{artifact.stem}.study-{_sha(hashes)[:12]}"


def run_search(
    spec: SuiteSpec,
    candidate: Candidate,
    backend: Backend,
    *,
    pool: Dataset,
    hashes: dict[str, Any],
    notify: Notify | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the search and write its artifact; the artifact's content."""
    settings = candidate.search
    assert settings is not None
    artifact_path = candidate.search_artifact_path(spec.path, spec.name)
    search = _Search(spec, candidate, backend, pool, notify)
    search.split()
    folder = study_folder(artifact_path, hashes)
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".gitignore").write_text("*\n")
    study = open_stored_study(
        folder, trials=settings.trials, seed=settings.seed, pruner=settings.pruner, direction="maximize"
    )
    already = len(distinct_trials(study))
    if already and notify is not None:
        notify(f"{candidate.name}: resuming the search after {already} finished trials")
    started = time.perf_counter()
    draws = DRAWS_PER_TRIAL * settings.trials - len(finished_trials(study))
    if settings.trials - already > 0 and draws > 0:

        def enough(study: Any, _: Any) -> None:
            if len(distinct_trials(study)) >= settings.trials:
                study.stop()

        study.optimize(search.objective(), n_trials=draws, callbacks=[enough], catch=())
        found = len(distinct_trials(study))
        if found < settings.trials and notify is not None:
            notify(
                f"{candidate.name}: {found} distinct configurations in {len(finished_trials(study))} draws; "
                f"the space seems to hold fewer than {settings.trials}"
            )
    trials = [_trial_record(t) for t in finished_trials(study)]
    complete = [t for t in trials if t.state == "complete"]
    if not complete:
        raise PromptSearchError(
            f"candidate '{candidate.name}': no search trial completed ({len(trials)} pruned)",
            path=spec.path,
            line=candidate.line,
            fix="run more trials, or use `pruner: none`",
        )
    artifact = _artifact(search, study, trials, hashes, timing={"started": started, "resumed_after": already})
    write_text_atomically(artifact_path, json.dumps(artifact, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    return artifact


def _artifact(
    search: _Search, study: Any, trials: list[TrialRecord], hashes: dict[str, Any], *, timing: dict[str, Any]
) -> dict[str, Any]:
    """The artifact's content: the best trial's settings, demos and calibration, every trial, the hashes."""
    spec, candidate, pool = search.spec, search.candidate, search.pool
    settings = candidate.search
    assert settings is not None
    best = study.best_trial
    params = dict(best.params)
    for name, values in settings.space.items():  # values sampled by their JSON text, decoded
        if name in params and isinstance(values, list) and any(isinstance(v, (list, dict)) for v in values):
            params[name] = json.loads(params[name])
    excluded = {pool.rows[i].id for i in search.dev}
    demo_ids, calibration = _final_demos(search, params, excluded)
    dev_n = len(search.dev) if search.dev else len(pool)
    value = float(best.value)
    ci = wilson_interval(round(value * dev_n), dev_n)  # (a pass rate's mean, with repeats, is approximated so)
    return {
        "version": ARTIFACT_VERSION,
        "suite": spec.name,
        "candidate": candidate.name,
        "objective": settings.objective,
        "sampler": f"TPESampler(seed={settings.seed})",
        "pruner": settings.pruner,
        "settings": params,
        "demo_ids": demo_ids,
        "excluded_ids": sorted(excluded),
        "calibration": calibration,
        "best": {
            "trial": best.number,
            "dev_accuracy": value,
            "dev_ci95": [round(ci[0], 6), round(ci[1], 6)],
            "dev_n": dev_n,
        },
        "trials": [dataclasses.asdict(t) for t in trials],
        "hashes": hashes,
        "timing": {
            "search_s": round(sum(t.seconds or 0.0 for t in trials), 3),
            "this_run_s": round(time.perf_counter() - timing["started"], 3),
            "resumed_after": timing["resumed_after"],
        },
    }


def ensure_prompt_search(
    spec: SuiteSpec,
    candidate: Candidate,
    backend: Backend,
    *,
    mode: str = "auto",
    notify: Notify | None = None,
    golden: Dataset | None = None,
    model: str | None = None,
) -> PromptSearchOutcome:
    """The candidate's search outcome: read from its artifact when current, searched first when missing
    or stale (``auto``), always searched anew (``always``), or never (``never``: missing or stale is an
    error). ``backend`` answers the trials (put it behind the result cache); ``model``: the identity the
    artifact is tied to (default: the backend's fingerprint)."""
    assert candidate.search is not None and candidate.fewshot_path is not None
    pool = load_dataset(candidate.fewshot_path, id_field=spec.id_field)
    hashes = current_hashes(spec, candidate, pool, model or backend.fingerprint)
    path = candidate.search_artifact_path(spec.path, spec.name)
    artifact = read_artifact(path)
    reason = stale_reason(artifact, hashes)
    if mode != "always" and reason is None and artifact is not None:
        return outcome_of(artifact, path)
    if mode == "never":
        raise PromptSearchError(
            f"the prompt search of candidate '{candidate.name}' is {'missing' if artifact is None else 'stale'}: "
            f"{reason} ({shown_path(path)})",
            path=spec.path,
            line=candidate.line,
            fix=f"run `evalkit search {shown_path(spec.path)} {candidate.name}` and commit {path.name}, "
            "or run with --evalkit-train=auto",
        )
    golden = golden or load_dataset(spec.dataset_path, id_field=spec.id_field)
    check_pool_contamination(spec, candidate, pool, golden)
    if notify is not None:
        why = "searching again on request" if reason is None else f"searching it because {reason}"
        notify(f"{spec.name}::{candidate.name}: prompt search, {why} ({candidate.search.trials} trials)")
    artifact = run_search(spec, candidate, backend, pool=pool, hashes=hashes, notify=notify, fresh=mode == "always")
    return outcome_of(artifact, path, searched_now=True)


def search_table(outcome: PromptSearchOutcome) -> str:
    """Every trial of a search, a row each (a repeat of an earlier configuration says which), the best
    marked with ``*``; then the chosen settings."""
    from tabulate import tabulate

    names = list(dict.fromkeys([*outcome.settings, *(n for t in outcome.trials for n in t.params)]))
    rows = []
    for t in outcome.trials:
        score = t.score
        rows.append(
            [
                ("* " if t.number == outcome.best_trial else "  ") + str(t.number + 1),
                t.state if t.same_as is None else f"{t.state}, as trial {t.same_as + 1}",
                f"{score:.3f}" if score is not None else "-",
                " ".join(f"{s:.2f}" for s in t.steps),
                f"{t.seconds:.1f}" if t.seconds is not None else "-",
                *[t.params.get(n, "") for n in names],
            ]
        )
    table = tabulate(rows, headers=["trial", "state", outcome.objective, "after each step", "s", *names])
    lo, hi = outcome.dev_ci95
    return (
        f"{table}\n* best: trial {outcome.best_trial + 1}, {outcome.objective} {outcome.dev_accuracy:.3f} "
        f"[{lo:.3f}, {hi:.3f}] on {outcome.dev_n} rows; {outcome.search_s:.1f}s of trials -> {outcome.artifact_path}"
    )

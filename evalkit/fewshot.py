"""Few-shot demos and contextual calibration: which pool rows a prompt shows, in which order, and the label
prior a classify candidate divides out.

* ``select: random`` draws ``k`` pool rows with the seed (the same set for every row);
* ``select: stratified`` draws them evenly across the labels, so a demo set cannot miss a class while
  ``k`` is at least the number of labels;
* ``select: nearest`` picks, for each row, the ``k`` pool rows most similar to it: TF-IDF vectors
  (scikit-learn's ``TfidfVectorizer`` fitted on the pool) compared by cosine similarity, ties to the
  earlier pool row (Liu et al. 2021, "What makes good in-context examples for GPT-3?");
* ``order: nearest_last`` puts the demos most similar to the row last, nearest the question.

``calibration: contextual`` (Zhao et al. 2021, "Calibrate before use") renders content-free inputs ("N/A",
"" and "[MASK]" in every input field) through the same prompt and demos, averages the choice
probabilities they get into the label prior ``p_cf``, and decides each row by ``p(choice) / p_cf(choice)``
(the probabilities normalised over the row's choices). The prior is computed once per demo set.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from evalkit.data import Dataset, Row, canonical_json
from evalkit.errors import EvalkitError
from evalkit.prompts import select_fewshot

if TYPE_CHECKING:
    from evalkit.backends.base import Backend, ChoiceRequest, ChoiceResult
    from evalkit.spec import Candidate, SuiteSpec

CONTENT_FREE = ("N/A", "", "[MASK]")


def input_fields(fields: dict[str, Any], spec: SuiteSpec) -> list[str]:
    """The names of a row's input text fields: every string field but its id, gold answer and choices."""
    ignored = {spec.id_field, spec.task.target, spec.task.choices_field}
    return [k for k, v in fields.items() if k not in ignored and isinstance(v, str)]


def input_key(fields: dict[str, Any], spec: SuiteSpec) -> str:
    """A row's input text, whitespace collapsed and case folded: two rows with the same key ask the same
    question, whatever their ids and answers."""
    return canonical_json({k: " ".join(str(fields[k]).split()).casefold() for k in input_fields(fields, spec)})


def place_of(dataset: Dataset, row: Row) -> str:
    """Where a row is, for a message: ``file:line``, or ``row N of file``."""
    return f"{dataset.path.name}:{row.line}" if row.line is not None else f"row {row.number} of {dataset.path.name}"


def shared_rows(rows: Sequence[Row], golden: Dataset, spec: SuiteSpec) -> list[tuple[Row, Row]]:
    """Each of ``rows`` that asks what a golden row asks, with that golden row."""
    golden_keys: dict[str, Row] = {}
    for row in golden.rows:
        golden_keys.setdefault(input_key(row.fields, spec), row)
    return [(row, golden_keys[key]) for row in rows if (key := input_key(row.fields, spec)) in golden_keys]


def demo_contamination(demos: Demos | None, golden: Dataset, spec: SuiteSpec, candidate: str) -> str | None:
    """A failure when a demo the candidate can show duplicates a golden row (its fixed set's rows, or any
    pool row for demos chosen per row): that row would be answered next to its own answer, and
    ``select: nearest`` would pick it first. None when the demos are clean."""
    if demos is None or demos.k == 0:
        return None
    shown = demos.fixed if demos.fixed is not None else list(demos.pool.rows)
    shared = shared_rows(shown, golden, spec)
    if not shared:
        return None
    pairs = "; ".join(f"{place_of(demos.pool, d)} = {place_of(golden, g)}" for d, g in shared[:5])
    more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
    which = "its demos" if demos.fixed is not None else f"its pool (select: {demos.select}: any row may be a demo)"
    return (
        f"candidate '{candidate}' shows few-shot demos that duplicate golden rows: {len(shared)} row(s) of {which} "
        f"({pairs}{more}); remove them from {demos.pool.path.name} (or from the golden set)"
    )


def input_text(fields: dict[str, Any], spec: SuiteSpec) -> str:
    """What ``nearest`` compares: the row's input text fields, one a line."""
    return "\n".join(str(fields[k]) for k in input_fields(fields, spec))


def select_random(rows: Sequence[Row], k: int, seed: int) -> list[Row]:
    """``k`` rows drawn without replacement with ``seed`` (all rows, in order, if there are fewer)."""
    return select_fewshot(rows, k, seed)


def select_stratified(rows: Sequence[Row], labels: Sequence[str], k: int, seed: int) -> list[Row]:
    """``k`` rows drawn evenly across ``labels`` (one per row): the labels take turns, in an order drawn
    with ``seed``, each giving its next row (drawn with ``seed`` too), until ``k`` are picked; the picks
    are then shuffled so the labels do not cycle in a fixed order."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    groups = [rng.sample(members, len(members)) for _, members in sorted(by_label.items())]
    turns = rng.sample(range(len(groups)), len(groups))
    wanted = min(k, len(rows))
    picked: list[int] = []
    depth = 0
    while len(picked) < wanted:
        for g in turns:
            if depth < len(groups[g]) and len(picked) < wanted:
                picked.append(groups[g][depth])
        depth += 1
    rng.shuffle(picked)
    return [rows[i] for i in picked]


class Similarity:
    """TF-IDF similarity of texts to the pool rows (scikit-learn, imported on first use)."""

    def __init__(self, pool_texts: Sequence[str], where: str) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer()
        try:
            self.pool = self.vectorizer.fit_transform(list(pool_texts))
        except ValueError:  # no word in any pool row
            raise EvalkitError(
                f"few-shot pool {where} has no words to compare rows by (select: nearest, order: nearest_last)",
                fix="give the pool rows a text field, or use `select: random`",
            ) from None

    def scores(self, texts: Sequence[str]) -> Any:
        """Cosine similarity of each text to each pool row (TF-IDF vectors are unit length)."""
        from sklearn.metrics.pairwise import linear_kernel

        return linear_kernel(self.vectorizer.transform(list(texts)), self.pool)


def nearest_indices(similarity: Any, k: int) -> list[list[int]]:
    """Per text, the ``k`` most similar pool rows, most similar first; ties to the earlier pool row."""
    import numpy as np

    # rounded, so rows of equal similarity tie exactly (and go to the earlier pool row) whatever the float noise
    order = np.argsort(-np.round(np.asarray(similarity), 10), axis=1, kind="stable")
    return [list(map(int, row[:k])) for row in order]


@dataclass
class Demos:
    """The demos a candidate shows: one fixed set for every row, or a set per row (``nearest``, or any
    selection with ``order: nearest_last``). ``example`` turns a pool row into what the template sees."""

    spec: SuiteSpec
    pool: Dataset
    select: str
    order: str
    k: int
    fixed: list[Row] | None
    example: Callable[[Row], dict[str, Any]]
    _similarity: Similarity | None = None
    _per_text: dict[str, list[Row]] = field(default_factory=dict)

    @property
    def per_row(self) -> bool:
        return self.fixed is None or (self.order == "nearest_last" and len(self.fixed) > 1)

    def _similar(self) -> Similarity:
        if self._similarity is None:
            self._similarity = Similarity(
                [input_text(r.fields, self.spec) for r in self.pool.rows], self.pool.path.name
            )
        return self._similarity

    def prefetch(self, rows: Sequence[dict[str, Any]]) -> None:
        """Select the demos of many rows in one TF-IDF pass (later lookups are by text)."""
        if not self.per_row or self.k == 0:
            return
        texts = list(dict.fromkeys(input_text(f, self.spec) for f in rows))
        texts = [t for t in texts if t not in self._per_text]
        if not texts:
            return
        scores = self._similar().scores(texts)
        if self.fixed is None:
            for text, picks in zip(texts, nearest_indices(scores, self.k)):
                chosen = [self.pool.rows[i] for i in picks]
                self._per_text[text] = chosen[::-1] if self.order == "nearest_last" else chosen
            return
        position = {row.id: i for i, row in enumerate(self.pool.rows)}
        fixed = self.fixed
        for text, row_scores in zip(texts, scores):
            # the fixed set, least similar first: the most similar demo sits next to the question
            ranked = sorted(range(len(fixed)), key=lambda j: (float(row_scores[position[fixed[j].id]]), j))
            self._per_text[text] = [fixed[j] for j in ranked]

    def rows_for(self, fields: dict[str, Any]) -> list[Row]:
        """The demo rows a row with ``fields`` sees, in order."""
        if not self.per_row or self.k == 0:
            return list(self.fixed or [])
        text = input_text(fields, self.spec)
        if text not in self._per_text:
            self.prefetch([fields])
        return self._per_text[text]

    def examples_for(self, fields: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.example(row) for row in self.rows_for(fields)]

    def record(self) -> dict[str, Any]:
        """What a run record says about the demos: the selection and, for a fixed set, its ids in order."""
        return {
            "select": self.select,
            "order": self.order,
            "k": self.k,
            "pool_rows": len(self.pool),
            "demo_ids": [r.id for r in self.fixed] if self.fixed is not None else None,
        }


def build_demos(
    spec: SuiteSpec,
    candidate: Candidate,
    pool: Dataset,
    example: Callable[[Row], dict[str, Any]],
    label: Callable[[Row], str] | None,
    *,
    demo_ids: Sequence[str] | None = None,
) -> Demos:
    """The demos of ``candidate`` drawn from ``pool``. ``label`` gives a pool row's label (stratified
    selection). ``demo_ids``: a fixed set chosen before (a search artifact's), used as it is."""
    fewshot = candidate.fewshot
    assert fewshot is not None
    fixed: list[Row] | None
    if demo_ids is not None:
        by_id = {row.id: row for row in pool.rows}
        missing = [i for i in demo_ids if i not in by_id]
        if missing:
            raise EvalkitError(
                f"the prompt search chose demo rows that the pool {pool.path.name} no longer has: {', '.join(missing[:5])}",
                path=spec.path,
                line=candidate.line,
                fix="search again (the artifact is stale): evalkit search SUITE CANDIDATE",
            )
        fixed = [by_id[i] for i in demo_ids]
    elif fewshot.select == "nearest":
        fixed = None
    elif fewshot.select == "stratified":
        if label is None:
            raise EvalkitError("stratified selection needs labelled pool rows (a classify task)", path=spec.path)
        fixed = select_stratified(pool.rows, [label(r) for r in pool.rows], fewshot.k, fewshot.seed)
    else:
        fixed = select_random(pool.rows, fewshot.k, fewshot.seed)
    return Demos(spec, pool, fewshot.select, fewshot.order, fewshot.k, fixed, example)


# --------------------------------------------------------------------------- contextual calibration


def _log_softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    total = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - total for v in values]


class CandidatePrompts(Protocol):
    """What calibration reads of a prepared candidate (an :class:`evalkit.tasks.PreparedCandidate`)."""

    spec: SuiteSpec
    dataset: Dataset
    prompts: list[str]
    choices: list[list[str]]
    demos: Demos | None
    calibration: ContextualCalibration | None

    def render_with_turns(
        self, fields: dict[str, Any], choices: list[str] | None, label: str, examples: list[Any] | None = None
    ) -> tuple[str, Any]: ...


@dataclass(frozen=True)
class CalibrationPlan:
    """What one call needs for calibration: each row's demo-set key, and the content-free requests of the
    demo sets whose prior is not known yet (three per set, answered with the rows in the same call)."""

    keys: list[str]
    requests: list[ChoiceRequest]
    measured: list[tuple[str, tuple[str, ...]]]  # (key, choices) of each new demo set, in request order


@dataclass
class ContextualCalibration:
    """The label prior of each demo set (and choice list), measured on content-free inputs; computed once
    per demo set and kept for the candidate's later calls (robustness, dev chunks)."""

    content_free: tuple[str, ...] = CONTENT_FREE
    priors: dict[str, tuple[float, ...]] = field(default_factory=dict)
    choices_of: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def _key(self, demo_ids: Sequence[str], choices: Sequence[str]) -> str:
        return hashlib.sha256(json.dumps([list(demo_ids), list(choices)]).encode()).hexdigest()[:16]

    def plan(self, prepared: CandidatePrompts, items: Sequence[tuple[dict[str, Any], list[str]]]) -> CalibrationPlan:
        """The keys of ``items`` (a row's fields and choices each) and the content-free requests of the
        demo sets not measured yet. Each renders the row's own demos and choices with every input field
        blanked, so it shares the demos' token prefix with the row: sent in the row's call, the prefix is
        computed once for both."""
        from evalkit.backends.base import ChoiceRequest

        spec = prepared.spec
        prefix = spec.task.choice_prefix
        keys: list[str] = []
        requests: list[ChoiceRequest] = []
        measured: list[tuple[str, tuple[str, ...]]] = []
        planned: set[str] = set()
        for fields, choices in items:
            demo_rows = prepared.demos.rows_for(fields) if prepared.demos is not None else []
            key = self._key([r.id for r in demo_rows], choices)
            keys.append(key)
            if key in self.priors or key in planned:
                continue
            planned.add(key)
            measured.append((key, tuple(choices)))
            examples = [prepared.demos.example(r) for r in demo_rows] if prepared.demos is not None else []
            names = input_fields(fields, spec)
            for text in self.content_free:
                blank = {**fields, **{n: text for n in names}}
                prompt = prepared.render_with_turns(blank, choices, "a content-free input", examples=examples)[0]
                requests.append(ChoiceRequest(prompt, tuple(prefix + c for c in choices)))
        return CalibrationPlan(keys, requests, measured)

    def absorb(self, plan: CalibrationPlan, answers: Sequence[ChoiceResult]) -> None:
        """Keep the priors measured by ``answers`` to ``plan.requests``: each demo set's mean choice
        probabilities over its content-free inputs."""
        n = len(self.content_free)
        for j, (key, choices) in enumerate(plan.measured):
            probabilities = [[math.exp(v) for v in _log_softmax(a.logprobs)] for a in answers[j * n : (j + 1) * n]]
            self.priors[key] = tuple(sum(p[c] for p in probabilities) / n for c in range(len(choices)))
            self.choices_of[key] = choices

    def calibrated(self, keys: Sequence[str], responses: Sequence[ChoiceResult]) -> list[list[float]]:
        """Each row's calibrated choice scores: ``log p(choice) - log p_cf(choice)``, the probabilities
        normalised over the row's choices; the argmax is the calibrated prediction."""
        return [
            [lp - math.log(max(p, 1e-300)) for lp, p in zip(_log_softmax(response.logprobs), self.priors[key])]
            for key, response in zip(keys, responses)
        ]

    def measure(self, prepared: CandidatePrompts, backend: Backend, rows: Sequence[int]) -> list[str]:
        """The prior of each row's demo set (and choices), measured where not known yet; each row's key."""
        plan = self.plan(prepared, [(prepared.dataset.rows[i].fields, prepared.choices[i]) for i in rows])
        if plan.requests:
            self.absorb(plan, backend.score_choices(plan.requests))
        return plan.keys

    def record(self) -> dict[str, Any]:
        """The method, its inputs and the prior: one vector per demo set (one in all for a fixed set)."""
        vectors = [
            {"choices": list(self.choices_of[k]), "prior": [round(p, 6) for p in v]} for k, v in self.priors.items()
        ]
        return {
            "method": "contextual",
            "content_free": list(self.content_free),
            "demo_sets": len(vectors),
            "priors": vectors[:20],
        }


def prompt_identity(prepared: CandidatePrompts) -> str:
    """The rendered prompts and how they are decided (calibration: its method and content-free inputs):
    what identifies a candidate's answers for the baseline, the run history and the golden-set count.
    The measured priors are left out: the model and the demos decide them, and their last digits move
    with the order in which a batch sums (they are in the run record)."""
    digest = hashlib.sha256("\x00".join(prepared.prompts).encode())
    if prepared.calibration is not None:
        how = {"method": "contextual", "content_free": list(prepared.calibration.content_free)}
        digest.update(b"\x00calibration:" + canonical_json(how).encode())
    return digest.hexdigest()

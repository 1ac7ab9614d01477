"""A candidate's robustness: which of its rows are searched and how, the search memoised in the result
cache under everything its outcome depends on, and each searched example's ``invariance``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evalkit.cache import KeyParts
from evalkit.data import canonical_json
from evalkit.errors import DatasetError
from evalkit.robustness.report import RobustnessReport
from evalkit.robustness.search import SearchRow, search, search_fingerprint, select_rows

if TYPE_CHECKING:
    from evalkit.cache import CachedBackend
    from evalkit.results import ExampleResult
    from evalkit.tasks import PreparedCandidate


def text_fields(row_fields: dict[str, Any], exclude: set[str], only: Sequence[str] | None) -> dict[str, str]:
    """The fields a perturbation may change: ``only`` when given, else every string field not excluded."""
    if only is not None:
        return {name: row_fields[name] for name in only if isinstance(row_fields.get(name), str)}
    return {name: value for name, value in row_fields.items() if isinstance(value, str) and name not in exclude}


def _search_rows(prepared: PreparedCandidate, examples: list[ExampleResult], picked: list[int]) -> list[SearchRow]:
    """Each picked row as the search perturbs it: its text fields, its choices, its answer."""
    spec, task, dataset = prepared.spec, prepared.spec.task, prepared.dataset
    config = spec.robustness
    assert config is not None
    exclude = {name for name in (spec.id_field, task.target, task.choices_field) if name is not None}
    rows: list[SearchRow] = []
    for i in picked:
        row = dataset.rows[i]
        missing = [name for name in config.fields or [] if not isinstance(row.fields.get(name), str)]
        if missing:
            raise DatasetError(
                f"robustness field '{missing[0]}' is not a text field of this row",
                **dataset.where(row),
                fix="name text fields in `robustness.fields`",
            )
        rows.append(
            SearchRow(
                row.id,
                text_fields(row.fields, exclude, config.fields),
                prepared.row_choices(i),
                prepared.kind.answer_of(examples[i]),
            )
        )
    return rows


def _search_key(
    prepared: PreparedCandidate, backend: CachedBackend, rows: list[SearchRow], picked: list[int]
) -> KeyParts:
    """What a search's outcome depends on: model, adapter, how a row renders and is decided (its demos, its
    calibration), the rows, the settings, the code."""
    config, dataset = prepared.spec.robustness, prepared.dataset
    assert config is not None
    inputs = {
        "template": prepared.template.sha256,
        "fewshot": prepared.fewshot,
        "demos": prepared.demos.record() if prepared.demos is not None else None,
        "calibration": prepared.candidate.calibration,
        "chat": prepared.candidate.chat,
        "system": prepared.candidate.system,
        "task": prepared.spec.task.model_dump(mode="json"),
        "full": {row.id: row.fields for row in (dataset.rows[i] for i in picked)},
        "rows": [row.as_list() for row in rows],
        "code": search_fingerprint(config.perturbations),
    }
    return KeyParts(
        "robustness",
        backend.fingerprint,
        backend.adapter,
        hashlib.sha256(canonical_json(inputs).encode()).hexdigest(),
        canonical_json(config.model_dump(mode="json")),
    )


def check_robustness(
    prepared: PreparedCandidate, backend: CachedBackend, examples: list[ExampleResult]
) -> RobustnessReport:
    """Search each selected row of a candidate for a harmless-looking change that changes its answer.

    The search is deterministic given its answers, so its outcome is memoised in the result cache
    (:func:`_search_key`)."""
    config, dataset = prepared.spec.robustness, prepared.dataset
    assert config is not None
    picked = select_rows(list(range(len(dataset.rows))), config.examples, config.seed)
    rows = _search_rows(prepared, examples, picked)

    def run_search() -> RobustnessReport:
        return search(
            rows,
            config.perturbations,
            lambda batch: prepared.kind.predict(prepared, backend, batch),
            tries=config.tries,
            seed=config.seed,
            shrink_calls=config.shrink_calls,
        )

    report = backend.memoise(
        _search_key(prepared, backend, rows, picked),
        run_search,
        encode=lambda report: json.dumps(report.stored()),
        decode=lambda text: RobustnessReport.from_stored(json.loads(text)),
    )
    held = {r.id: r.held for r in report.rows}
    for i in picked:
        examples[i].details["invariance"] = float(held[dataset.rows[i].id])
    return report

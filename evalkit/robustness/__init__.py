"""Robustness: does a candidate keep its answer when a row is changed in ways a user would call harmless?

Each perturbation (:mod:`evalkit.robustness.perturb`) is a Hypothesis strategy over a row's input text
(or its choice order). For every selected row, evalkit draws ``tries`` perturbations (Hypothesis's
generation, seeded), scores them in one batched backend call, and, for a row whose answer changed, lets
Hypothesis shrink the change to the smallest one that still changes it: typically one character
(:mod:`evalkit.robustness.search`). The metric is ``invariance``, the share of rows whose answer held
under every try (:mod:`evalkit.robustness.report`); a candidate's search is memoised in the result cache
(:mod:`evalkit.robustness.check`).

Custom perturbations: ``@register_perturbation("name")`` on a function ``(fields, choices) ->
SearchStrategy[Change]``, or the same function published under the entry-point group
``evalkit.perturbations``.
"""

from evalkit.robustness.check import check_robustness, text_fields
from evalkit.robustness.perturb import (
    DISTRACTORS,
    ENTRY_POINT_GROUP,
    PERTURBATIONS,
    Change,
    Perturbation,
    PerturbationFactory,
    PerturbedRow,
    apply_typo,
    check_perturbations,
    perturbations,
    register_perturbation,
)
from evalkit.robustness.report import RobustnessReport, RowOutcome
from evalkit.robustness.search import Predict, SearchRow, search, search_fingerprint, select_rows

__all__ = [
    "DISTRACTORS",
    "ENTRY_POINT_GROUP",
    "PERTURBATIONS",
    "Change",
    "Perturbation",
    "PerturbationFactory",
    "PerturbedRow",
    "Predict",
    "RobustnessReport",
    "RowOutcome",
    "SearchRow",
    "apply_typo",
    "check_perturbations",
    "check_robustness",
    "perturbations",
    "register_perturbation",
    "search",
    "search_fingerprint",
    "select_rows",
    "text_fields",
]

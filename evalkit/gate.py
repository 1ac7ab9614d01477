"""Threshold expressions such as ``">= 0.60"``: parsed by evalkit, never evaluated as Python."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from evalkit.errors import ThresholdError

_OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_EXPRESSION = re.compile(
    r"^\s*(?P<op>>=|<=|==|>|<)\s*(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<percent>%?)\s*$"
)
_FIX = 'write a comparison and a number, e.g. ">= 0.60", "> 0.5" or ">= 75%"'


@dataclass(frozen=True)
class Threshold:
    """One parsed comparison applied to one metric."""

    metric: str
    op: str
    value: float
    text: str

    def check(self, measured: float) -> bool:
        return _OPERATORS[self.op](measured, self.value)

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


def parse_threshold(metric: str, expression: object) -> Threshold:
    """Parse ``expression`` for ``metric``; raise ThresholdError with the fix if it does not parse.

    A bare number (``0.6``) means ``>= 0.6``.
    """
    if isinstance(expression, bool):
        raise ThresholdError(f"threshold for '{metric}' is {expression!r}, not a comparison", fix=_FIX)
    if isinstance(expression, (int, float)):
        value = float(expression)
        if not math.isfinite(value):
            raise ThresholdError(f"threshold for '{metric}' is not a finite number", fix=_FIX)
        return Threshold(metric, ">=", value, f">= {expression}")
    if not isinstance(expression, str):
        raise ThresholdError(
            f"threshold for '{metric}' must be a string like \">= 0.60\", got {type(expression).__name__}", fix=_FIX
        )
    match = _EXPRESSION.match(expression)
    if not match:
        raise ThresholdError(f"threshold for '{metric}' does not parse: {expression!r}", fix=_FIX)
    value = float(match["number"])
    if match["percent"]:
        value /= 100.0
    if not math.isfinite(value):
        raise ThresholdError(f"threshold for '{metric}' is not a finite number: {expression!r}", fix=_FIX)
    return Threshold(metric, match["op"], value, expression.strip())

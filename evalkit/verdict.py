"""A candidate's verdict, decided in one place: whether it passed, and why not.

A result's ``failures`` are the sentences a user reads (in pytest's output and in results.json); each is
written here, by kind, and read back here, so every report (terminal, summary.md, report.html, JUnit,
``evalkit diff``) shows the same verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalkit.record import CandidateEntry, Comparison

REGRESSION = "regression against the baseline"
THRESHOLD = "does not meet"
QUIET_STATUSES = (None, "no baseline", "no significant change")  # statuses a passing verdict does not mention


def threshold_failure(metric: str, value: float, interval: tuple[float, float], expression: str) -> str:
    return f"{metric} {value:.3f} (95% CI {interval[0]:.3f}-{interval[1]:.3f}) {THRESHOLD} {expression!r}"


def regression_failure(reason: str) -> str:
    return f"{REGRESSION}: {reason}"


def without_regression(failures: list[str]) -> list[str]:
    """``failures`` less the baseline's: what remains when the comparison is made again."""
    return [f for f in failures if not f.startswith(REGRESSION)]


@dataclass(frozen=True)
class Verdict:
    """Pass or fail, and what decided it: the baseline gate, a threshold, or another error."""

    passed: bool
    status: str | None  # the baseline comparison's status (None: nothing compared)
    regressed: bool
    threshold: bool  # a threshold was not met
    error: bool  # another failure (an adapter trained on golden rows, ...)
    expected_failure: str | None = None  # the reason of the candidate's xfail marker (None: none)

    @property
    def expected(self) -> bool:
        """Failed, as its xfail marker says it will (pytest counts it as xfailed, not failed)."""
        return not self.passed and self.expected_failure is not None

    @property
    def unexpected_pass(self) -> bool:
        """Passed although its xfail marker says it fails (pytest: XPASS, a failure when strict)."""
        return self.passed and self.expected_failure is not None

    @classmethod
    def of(cls, entry: CandidateEntry) -> Verdict:
        """The verdict of a candidate's entry in the run record."""
        return cls.decide(entry.failures, entry.baseline, entry.expected_failure, passed=entry.passed)

    @classmethod
    def decide(
        cls,
        failures: list[str],
        comparison: Comparison | None,
        expected_failure: str | None,
        *,
        passed: bool | None = None,
    ) -> Verdict:
        """The verdict of a candidate's failures and baseline comparison (``passed``: as recorded, if it was)."""
        others = without_regression(failures)
        return cls(
            passed=passed if passed is not None else not failures,
            status=comparison.status if comparison is not None else None,
            regressed=comparison is not None and comparison.regressed,
            threshold=any(THRESHOLD in f for f in others),
            error=any(THRESHOLD not in f for f in others),
            expected_failure=expected_failure,
        )

    @property
    def reasons(self) -> list[str]:
        reasons = ["regressed"] if self.regressed else []
        if self.threshold or self.error:
            reasons.append("threshold" if self.threshold else "error")
        return reasons

    def summary(self) -> str:
        """As summary.md and report.html say it: ``pass``, ``pass (improved)``, ``FAIL (regressed, threshold)``,
        ``expected failure (threshold): <reason>``, ``pass, though expected to fail: <reason>``."""
        if self.unexpected_pass:
            return f"pass, though expected to fail: {self.expected_failure}"
        if self.passed:
            return "pass" if self.status in QUIET_STATUSES else f"pass ({self.status})"
        if self.expected:
            return f"expected failure ({', '.join(self.reasons)}): {self.expected_failure}"
        return "FAIL (" + ", ".join(self.reasons) + ")"

    def terminal(self) -> str:
        """As the terminal table says it: ``PASS``, ``PASS (improved)``, ``FAIL (regressed)``, ``FAIL``, and as
        pytest counts an xfail marker's candidates, ``XFAIL`` and ``XPASS``."""
        if self.expected:
            return "XFAIL"
        if self.unexpected_pass:
            return "XPASS"
        if not self.passed:
            return "FAIL (regressed)" if self.regressed else "FAIL"
        return "PASS" if self.status in QUIET_STATUSES else f"PASS ({self.status})"

    def junit(self) -> str:
        if self.expected:
            return "xfail"
        return "pass" if self.passed else "fail"


def expected_failure(markers: tuple[Any, ...]) -> str | None:
    """The reason of an xfail marker among a candidate's ``markers`` (as a suite writes them), or None."""
    for marker in markers:
        if marker == "xfail":
            return "expected to fail"
        if isinstance(marker, Mapping) and "xfail" in marker:
            return str((marker["xfail"] or {}).get("reason") or "expected to fail")
    return None

"""The baseline gate of a run: read the committed baseline once, compare each candidate with its entry (a
significant regression fails it), and write the baseline from a complete run when asked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from evalkit.baseline import Baseline, read_baseline, write_baseline
from evalkit.compare import Policy, Snapshot, compare
from evalkit.errors import EvalkitError
from evalkit.record import RunInfo
from evalkit.results import CandidateResult
from evalkit.spec import SuiteSpec
from evalkit.verdict import regression_failure

UpdateMode = Literal["replace", "merge"]


@dataclass
class BaselineGate:
    """``path``: the baseline compared with and written. ``update``: None gates every candidate on it;
    "replace" or "merge" writes it from this run instead (and a regression then fails nothing)."""

    path: Path
    update: UpdateMode | None = None
    _read: bool = field(default=False, repr=False)
    _baseline: Baseline | EvalkitError | None = field(default=None, repr=False)

    def baseline(self) -> Baseline | None:
        """The committed baseline (None when there is none yet); a damaged one raises EvalkitError."""
        if not self._read:
            try:
                self._baseline = read_baseline(self.path)
            except EvalkitError as error:
                self._baseline = error
            self._read = True
        if isinstance(self._baseline, EvalkitError):
            raise self._baseline
        return self._baseline

    def outputs(self, suite: str, candidate: str) -> dict[str, str]:
        """The baseline's outputs of a candidate by example id (as the baseline keeps them: the first 300
        characters); empty without a baseline entry."""
        baseline = self.baseline()
        reference = baseline.get(suite, candidate) if baseline is not None else None
        return {o.id: o.output for o in reference.outcomes.values()} if reference is not None else {}

    def check(self, spec: SuiteSpec, result: CandidateResult) -> None:
        """Attach the comparison with the baseline; a significant regression fails the candidate."""
        try:
            baseline = self.baseline()
        except EvalkitError:
            if self.update == "replace":  # about to be replaced: nothing to compare with
                return
            raise
        if baseline is None:
            return
        reference = baseline.get(result.suite, result.candidate)
        result.baseline = compare(Snapshot.from_result(result), reference, Policy(**spec.baseline.model_dump()))
        if result.baseline.regressed and self.update is None:
            result.failures.append(regression_failure(result.baseline.reason or ""))

    def write(
        self,
        results: list[CandidateResult],
        run: RunInfo,
        *,
        root: Path,
        shown: dict[str, str],
        incomplete: str | None,
        row_limit: int | None,
        limited: list[str],
    ) -> int:
        """Write the baseline from ``results`` (``shown``: each suite's file as the baseline names it);
        refused from a partial run (``incomplete`` says why, ``limited`` lists candidates evaluated on
        their first rows only) unless merging. Returns the number of candidates written."""
        merge = self.update == "merge"
        if row_limit is not None:
            raise EvalkitError(
                "baseline not written: --evalkit-limit evaluated only the first rows of each suite",
                path=self.path,
                fix="update the baseline from a run without --evalkit-limit",
            )
        if limited and incomplete is None:
            incomplete = f"{', '.join(limited)} evaluated only the first rows (evalkit.run(..., limit=N))"
        old = None
        try:
            old = self.baseline()
        except EvalkitError:
            if merge:
                raise
        if old is not None:  # a suite in the baseline whose file still exists but did not run
            ran = {r.suite for r in results}
            skipped = sorted(s for s, rel in old.suite_paths.items() if s not in ran and (root / rel).exists())
            if skipped and incomplete is None:
                incomplete = f"suite(s) {', '.join(skipped)} are in the baseline but did not run"
        if incomplete is not None and not merge:
            raise EvalkitError(
                f"baseline not written: this run covered only part of the suites ({incomplete})",
                path=self.path,
                fix="run every suite (pytest suites/ --evalkit-update-baseline), or keep the other entries and "
                "replace only what ran with --evalkit-merge-baseline",
            )
        baseline_header = {
            "written": run.finished,
            "git_commit": run.git_commit,
            "evalkit_version": run.evalkit_version,
        }
        return write_baseline(
            self.path,
            [Snapshot.from_result(r) for r in results],
            {r.suite: shown[r.suite] for r in results},
            baseline_header,
            merge_into=old if merge else None,
        )

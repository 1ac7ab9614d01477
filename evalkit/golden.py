"""How often a suite's golden set has been read: the distinct configurations measured on its rows.

Every configuration measured on the golden rows is a look at them, and the one kept is the one that did
well on those very rows, so the golden accuracy of the chosen candidate drifts up with the number of
looks (the reusable-holdout problem). This module counts the looks, per suite and per golden dataset
(its content hash), in a small committed ledger beside the baseline, ``reports/golden_reads.json``:

- a configuration is what produced a result apart from the data (``CandidateResult.hashes()`` without
  ``dataset``: prompts, template, model, adapter, the task's settings, judge), named by
  :func:`configuration_key`; a re-run of an unchanged configuration is not counted again;
- a ledger entry written before the task's settings were part of the key (:func:`legacy_key`) is
  renamed to the current key when its configuration is measured again, keeping its first run: the count
  does not grow by the change of key;
- a new dataset hash (a refreshed golden set) starts from zero;
- a run limited to its first rows is not counted;
- ``max_reads:`` in a suite (:class:`evalkit.spec.MaxReads`) warns, or with ``strict: true`` fails, once the
  count is past it;
- :func:`selection_interval` is the best candidate's accuracy interval adjusted for the looks (Bonferroni).

The run history under ``reports/runs/`` is local and git-ignored, so it cannot hold this count: a fresh
clone would always count one. The ledger is committed, one configuration per line, sorted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from evalkit.atomic import write_text_atomically
from evalkit.errors import EvalkitError, shown_path
from evalkit.record import GoldenReads
from evalkit.stats import Z95, wilson_interval

if TYPE_CHECKING:
    from evalkit.results import CandidateResult
    from evalkit.spec import MaxReads

LEDGER_FILE = "golden_reads.json"
LEDGER_KIND = "evalkit-golden-reads"
LEDGER_VERSION = 1
ALPHA = 0.05  # the family-wise error of the selection-adjusted interval
REFRESH_DOC = "docs/baselines.md#refreshing-a-golden-set"
_HEX16 = r"^[0-9a-f]{16}$"
_RUN_ID = r"^[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$"


def ledger_path(reports_dir: Path) -> Path:
    """Where the ledger is kept: ``<reports>/golden_reads.json``, beside ``baseline.json`` (committed)."""
    return reports_dir / LEDGER_FILE


def configuration_key(hashes: Mapping[str, str | None]) -> str:
    """The configuration that produced a result, from ``CandidateResult.hashes()`` (or ``hashes_of`` of a
    results.json entry): every hash but ``dataset``, 16 hex digits. An absent part (no adapter, no judge)
    is the same whether it is missing or None."""
    parts = {name: value for name, value in hashes.items() if name != "dataset" and value is not None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def legacy_key(hashes: Mapping[str, str | None]) -> str | None:
    """The key the same configuration had before the task's settings were hashed (None: it has none)."""
    if hashes.get("task") is None:
        return None
    return configuration_key({name: value for name, value in hashes.items() if name != "task"})


# --------------------------------------------------------------------------- the ledger file's schema


class LedgerEntry(BaseModel):
    """One configuration measured on a golden set: its key and the run that first measured it."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(pattern=_HEX16, description="configuration_key of the result's hashes")
    run: str = Field(pattern=_RUN_ID, description="the run id (its UTC start time) that first measured it")


class GoldenReadsFile(BaseModel):
    """``reports/golden_reads.json``: per suite and golden dataset hash, the configurations it has judged."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["evalkit-golden-reads"]
    version: Literal[1]
    suites: dict[str, dict[str, list[LedgerEntry]]] = Field(
        description="suite -> dataset hash -> the distinct configurations measured on it, sorted by key"
    )


def over_budget_message(suite: str, configurations: int, limit: int) -> str:
    return (
        f"suite '{suite}': its golden set has judged {configurations} distinct configurations, over max_reads "
        f"{limit}; refresh it with new rows ({REFRESH_DOC}) or raise max_reads"
    )


# --------------------------------------------------------------------------- the ledger


class GoldenLedger:
    """The committed count of configurations each suite's golden set has judged, and this run's additions.

    Read it once (:meth:`read`), :meth:`observe` each candidate measured on the full golden rows, and
    :meth:`write` it at the end of the run."""

    def __init__(self, seen: dict[str, dict[str, dict[str, str]]] | None = None) -> None:
        self._seen = seen if seen is not None else {}  # suite -> dataset hash -> key -> first run id
        self._new: dict[tuple[str, str], set[str]] = {}  # this run's keys the ledger did not hold
        self._renamed: dict[tuple[str, str], dict[str, str]] = {}  # a legacy key held -> its current key

    @classmethod
    def read(cls, path: Path) -> GoldenLedger:
        """The ledger at ``path``; an empty one when there is no file yet; a damaged file is an EvalkitError."""
        return cls(_read_seen(path))

    def keys(self, suite: str, dataset_hash: str) -> list[str]:
        """The configurations counted for this suite and golden set, sorted (this run's included)."""
        known = set(self._seen.get(suite, {}).get(dataset_hash, {}))
        renamed = self._renamed.get((suite, dataset_hash), {})
        known = (known - set(renamed)) | set(renamed.values())
        return sorted(known | self._new.get((suite, dataset_hash), set()))

    def reads(self, suite: str, dataset_hash: str, budget: MaxReads | None, *, counted: bool = True) -> GoldenReads:
        """How often this suite's golden set has been read, as counted so far, against ``budget``."""
        count = len(self.keys(suite, dataset_hash))
        over = counted and budget is not None and count > budget.limit
        return GoldenReads(
            dataset_hash=dataset_hash,
            configurations=count,
            new_this_run=len(self._new.get((suite, dataset_hash), ())),
            max_reads=None if budget is None else budget.limit,
            strict=budget is not None and budget.strict,
            over_budget=over,
            counted=counted,
            message=over_budget_message(suite, count, budget.limit) if over and budget is not None else None,
        )

    def observe(
        self,
        suite: str,
        dataset_hash: str,
        key: str,
        budget: MaxReads | None,
        *,
        limited: bool = False,
        legacy: str | None = None,
    ) -> GoldenReads:
        """Count configuration ``key`` as measured on the suite's golden set (once, however often it is
        observed or was before), and return the suite's count with it. ``legacy``: the key the ledger may
        hold it under from before (:func:`legacy_key`), renamed to ``key`` instead of counted anew. A
        ``limited`` run (its first rows only) is not counted: the count is returned as it stands, never
        over budget."""
        if not re.fullmatch(_HEX16, key):
            raise ValueError(f"{key!r} is not a configuration key (configuration_key gives 16 hex digits)")
        known = self._seen.get(suite, {}).get(dataset_hash, {})
        if not limited and key not in known:
            renamed = self._renamed.setdefault((suite, dataset_hash), {})
            if legacy is not None and legacy in known and legacy not in renamed:
                renamed[legacy] = key
            elif key not in renamed.values():
                self._new.setdefault((suite, dataset_hash), set()).add(key)
        return self.reads(suite, dataset_hash, budget, counted=not limited)

    @property
    def changed(self) -> bool:
        """Whether this run observed a configuration the ledger did not hold."""
        return any(self._new.values()) or any(self._renamed.values())

    def write(self, path: Path, run_id: str) -> bool:
        """Add this run's new configurations (first seen in ``run_id``) to the ledger at ``path``, atomically;
        nothing is written when there are none. The file is read again first, so what another run wrote
        since this one read it is kept. Returns whether it wrote."""
        if not re.fullmatch(_RUN_ID, run_id):
            raise ValueError(f"{run_id!r} is not a run id (results.new_run_id gives one)")
        if not self.changed:
            return False
        from evalkit.results import run_order

        merged = _read_seen(path)
        for (suite, dataset_hash), renamed in self._renamed.items():
            known = merged.setdefault(suite, {}).setdefault(dataset_hash, {})
            for legacy, key in renamed.items():
                first = known.pop(legacy, None) or run_id
                known[key] = min(known.get(key, first), first, key=run_order)
        for (suite, dataset_hash), keys in self._new.items():
            known = merged.setdefault(suite, {}).setdefault(dataset_hash, {})
            for key in keys:
                known.setdefault(key, run_id)
        try:
            write_text_atomically(path, ledger_text(merged))
        except OSError as exc:
            folder = path.parent
            reason = (
                f"{shown_path(folder)} is not a folder" if folder.exists() and not folder.is_dir() else exc.strerror
            )
            raise EvalkitError(
                f"cannot write the golden-read ledger: {reason}",
                path=path,
                fix="make the reports folder writable, or move it with --evalkit-reports",
            ) from None
        self._seen, self._new, self._renamed = merged, {}, {}
        return True


def ledger_text(seen: Mapping[str, Mapping[str, Mapping[str, str]]]) -> str:
    """The ledger as written: indented JSON, suites and dataset hashes sorted, one configuration per line
    sorted by key, so a pull request's diff shows one added line per new configuration."""
    suites = []
    for suite in sorted(s for s in seen if any(seen[s].values())):
        sets = []
        for dataset_hash in sorted(h for h in seen[suite] if seen[suite][h]):
            entries = ",\n".join(
                f'    {{"key": {json.dumps(key)}, "run": {json.dumps(run)}}}'
                for key, run in sorted(seen[suite][dataset_hash].items())
            )
            sets.append(f"   {json.dumps(dataset_hash)}: [\n{entries}\n   ]")
        suites.append(f"  {json.dumps(suite)}: {{\n" + ",\n".join(sets) + "\n  }")
    body = ",\n".join(suites)
    return (
        f'{{\n "kind": "{LEDGER_KIND}",\n "version": {LEDGER_VERSION},\n "suites": {{'
        + (f"\n{body}\n }}" if body else "}")
        + "\n}\n"
    )


def _read_seen(path: Path) -> dict[str, dict[str, dict[str, str]]]:
    """The ledger file's configurations (suite -> dataset hash -> key -> first run id); {} when missing."""
    from evalkit.record import parse_json, schema_problem
    from evalkit.results import run_order

    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # no ledger yet (or no folder it could be in)
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalkitError(
            f"cannot read the golden-read ledger: {getattr(exc, 'strerror', None) or exc}",
            path=path,
            fix="make the file readable",
        ) from None
    fix = (
        f"restore it from version control (git checkout -- {shown_path(path)}); it is the only count of how "
        f"often each golden set has been read, so deleting it would restart every count ({REFRESH_DOC})"
    )
    document = parse_json(text, path=path, what="golden-read ledger", fix=fix)
    if isinstance(document, dict) and document.get("kind") == LEDGER_KIND and document.get("version") != LEDGER_VERSION:
        raise EvalkitError(
            f"the golden-read ledger has version {document.get('version')!r}; this evalkit reads version "
            f"{LEDGER_VERSION}",
            path=path,
            fix="upgrade evalkit to the version that wrote it",
        )
    problem = schema_problem(GoldenReadsFile, document)
    if problem is not None:
        raise EvalkitError(f"the golden-read ledger is not one evalkit wrote: at {problem}", path=path, fix=fix)
    seen: dict[str, dict[str, dict[str, str]]] = {}
    for suite, sets in document["suites"].items():
        for dataset_hash, entries in sets.items():
            known = seen.setdefault(suite, {}).setdefault(dataset_hash, {})
            for entry in entries:  # a key listed twice (a merge of two branches) keeps its earliest run
                run = known.get(entry["key"])
                known[entry["key"]] = entry["run"] if run is None else min(run, entry["run"], key=run_order)
    return seen


# --------------------------------------------------------------------------- the selection-adjusted interval


def selection_level(reads: int) -> float:
    """The confidence level of each of ``reads`` intervals whose family holds at 95%: 1 - 0.05/m."""
    return 1 - ALPHA / max(1, reads)


def selection_interval(correct: int, n: int, reads: int) -> tuple[float, float]:
    """The Wilson interval of the best of ``reads`` configurations judged on the same golden set, at level
    1 - 0.05/m (Bonferroni over the m looks): with probability at least 0.95 every one of the m intervals
    holds its configuration's true accuracy, so the one chosen by looking at them does too. At m = 1 it
    is the ordinary 95% interval; a count below 1 counts as 1."""
    m = max(1, reads)
    z = Z95 if m == 1 else NormalDist().inv_cdf(1 - ALPHA / (2 * m))
    return wilson_interval(correct, n, z)


# --------------------------------------------------------------------------- one run's count


class GoldenCount:
    """A run's view of the ledger at ``path``: each candidate measured is observed as it is evaluated (so a
    strict budget fails the candidate read past it), and at the end of the run every suite's count goes into
    the run record and the run's new configurations into the ledger. The file is read on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ledger: GoldenLedger | None = None

    @property
    def ledger(self) -> GoldenLedger:
        if self._ledger is None:
            self._ledger = GoldenLedger.read(self.path)
        return self._ledger

    def observe(self, result: CandidateResult, budget: MaxReads | None, *, limited: bool) -> GoldenReads:
        """Count ``result``'s configuration on its suite's golden set (``limited``: measured on its first rows
        only, so not counted); its failure, when the suite is past a strict budget, is added to the result."""
        hashes = result.hashes()
        reads = self.ledger.observe(
            result.suite,
            result.dataset_hash,
            configuration_key(hashes),
            budget,
            limited=limited,
            legacy=legacy_key(hashes),
        )
        if reads.fails and reads.message is not None and reads.message not in result.failures:
            result.failures.append(reads.message)
        return reads

    def suites(
        self, results: Iterable[CandidateResult], budgets: Mapping[str, MaxReads | None], limited: set[tuple[str, str]]
    ) -> dict[str, GoldenReads]:
        """Every suite's count after the run, against its budget (``limited``: the candidates measured on
        their first rows only), with its most accurate candidate's interval adjusted for that many looks.
        Every result is observed again (a pytest-xdist worker's too; counted once), and none is failed: each
        candidate's verdict was given when it was evaluated."""
        by_suite: dict[str, list[CandidateResult]] = {}
        for r in results:
            hashes = r.hashes()
            is_limited = (r.suite, r.candidate) in limited
            self.ledger.observe(
                r.suite,
                r.dataset_hash,
                configuration_key(hashes),
                budgets.get(r.suite),
                limited=is_limited,
                legacy=legacy_key(hashes),
            )
            if "accuracy" in r.metrics and not is_limited:
                by_suite.setdefault(r.suite, []).append(r)
        found = {}
        for suite, rows in by_suite.items():
            best = max(rows, key=lambda r: (r.accuracy, r.candidate))
            reads = self.ledger.reads(suite, best.dataset_hash, budgets.get(suite))
            correct = round(best.accuracy * best.n)
            found[suite] = reads.model_copy(
                update={
                    "best": best.candidate,
                    "best_accuracy": best.accuracy,
                    "best_ci95": best.ci95["accuracy"],
                    "selection_ci95": selection_interval(correct, best.n, reads.configurations),
                }
            )
        return found

    def write(self, run_id: str) -> bool:
        """Add the run's new configurations to the ledger file (nothing when there are none)."""
        return self._ledger is not None and self._ledger.write(self.path, run_id)


def golden_line(suite: str, reads: GoldenReads) -> str:
    """A suite's golden-set reuse in one line: the count, the budget, and the best candidate's interval
    beside its selection-adjusted (Bonferroni) one."""
    noun = "configuration" if reads.configurations == 1 else "distinct configurations"  # "1 configuration"
    line = f"suite '{suite}': its golden set has judged {reads.configurations} {noun}"
    if reads.new_this_run:
        line += f" ({reads.new_this_run} new in this run)"
    if reads.max_reads is not None:
        line += f", of max_reads {reads.max_reads}" + (" (strict)" if reads.strict else "")
    if reads.best is not None and reads.best_ci95 is not None and reads.selection_ci95 is not None:
        lo, hi = reads.best_ci95
        s_lo, s_hi = reads.selection_ci95
        line += (
            f"; best {reads.best} {reads.best_accuracy:.3f} [{lo:.2f}, {hi:.2f}], "
            f"[{s_lo:.2f}, {s_hi:.2f}] adjusted for {reads.configurations} looks (Bonferroni)"
        )
    if reads.over_budget:
        line += ": OVER BUDGET, " + ("its candidates fail" if reads.strict else "refresh it") + f" ({REFRESH_DOC})"
    return line

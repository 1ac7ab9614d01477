"""The committed baseline (``reports/baseline.json``): what each candidate scored, example by example.

Written by ``pytest suites/ --evalkit-update-baseline`` from a complete run (or merged into with
``--evalkit-merge-baseline``); read by every run to gate each candidate on a real regression.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.atomic import write_text_atomically
from evalkit.compare import Snapshot
from evalkit.errors import EvalkitError
from evalkit.record import BASELINE_KIND, BASELINE_VERSION, BaselineFile, parse_json, schema_problem

KIND = BASELINE_KIND
VERSION = BASELINE_VERSION
UPDATE_HINT = "pytest suites/ --evalkit-update-baseline"


@dataclass
class Baseline:
    path: Path
    entries: dict[tuple[str, str], Snapshot] = field(default_factory=dict)
    suite_paths: dict[str, str] = field(default_factory=dict)  # suite name -> suite file, relative to the root
    header: dict[str, Any] = field(default_factory=dict)

    def get(self, suite: str, candidate: str) -> Snapshot | None:
        return self.entries.get((suite, candidate))


def read_baseline(path: Path) -> Baseline | None:
    """The baseline at ``path``, or None when there is none yet; a damaged file is an EvalkitError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EvalkitError(f"cannot read the baseline: {exc.strerror}", path=path) from None
    fix = f"restore it from version control (git checkout -- {path.name}), or write a new one: {UPDATE_HINT}"
    document = parse_json(text, path=path, what="baseline", fix=fix)
    if isinstance(document, dict) and document.get("kind") == KIND and document.get("version") != VERSION:
        raise EvalkitError(
            f"the baseline has version {document.get('version')!r}; this evalkit reads version {VERSION}",
            path=path,
            fix=f"write it again with this evalkit: {UPDATE_HINT}",
        )
    problem = schema_problem(BaselineFile, document)
    if problem is not None:
        raise EvalkitError(f"the baseline is not an evalkit baseline: at {problem}", path=path, fix=fix)
    baseline = Baseline(path=path, header={k: v for k, v in document.items() if k != "suites"})
    for suite, data in document["suites"].items():
        baseline.suite_paths[suite] = data["suite_path"]
        for candidate, entry in data["candidates"].items():
            baseline.entries[(suite, candidate)] = Snapshot.from_record(
                entry, entry["examples"], suite=suite, candidate=candidate
            )
    return baseline


def write_baseline(
    path: Path,
    snapshots: list[Snapshot],
    suite_paths: dict[str, str],
    header: dict[str, Any],
    *,
    merge_into: Baseline | None = None,
) -> int:
    """Write the baseline atomically; with ``merge_into``, keep its entries this run did not produce.

    Returns the number of candidates written."""
    suites: dict[str, dict[str, Any]] = {}
    if merge_into is not None:
        for (suite, candidate), snapshot in merge_into.entries.items():
            entry = suites.setdefault(suite, {"suite_path": merge_into.suite_paths[suite], "candidates": {}})
            entry["candidates"][candidate] = snapshot.baseline_entry()
    for suite in {s.suite for s in snapshots}:  # merging replaces the candidates this run produced
        suites.setdefault(suite, {"candidates": {}})["suite_path"] = suite_paths[suite]
    for snapshot in snapshots:
        suites[snapshot.suite]["candidates"][snapshot.candidate] = snapshot.baseline_entry()
    document = {
        "kind": KIND,
        "version": VERSION,
        **header,
        "suites": {
            s: {**suites[s], "candidates": dict(sorted(suites[s]["candidates"].items()))} for s in sorted(suites)
        },
    }
    write_text_atomically(path, _one_example_per_line(document))
    return sum(len(s["candidates"]) for s in suites.values())


def _one_example_per_line(document: dict[str, Any]) -> str:
    """Indented JSON with each example on a line of its own, so a pull request's diff of the baseline
    shows one changed line per example whose outcome changed."""
    lines: list[str] = []
    for suite in document["suites"].values():
        for entry in suite["candidates"].values():
            for i, example in enumerate(entry["examples"]):
                entry["examples"][i] = f"\u0000example-{len(lines)}"
                lines.append(json.dumps(example, ensure_ascii=False, separators=(", ", ": ")))
    text = json.dumps(document, indent=1, ensure_ascii=False)
    # One pass, so an inserted example is never searched again.
    return re.sub(r'"\\u0000example-(\d+)"', lambda m: lines[int(m.group(1))], text) + "\n"

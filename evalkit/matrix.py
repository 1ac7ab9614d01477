"""A suite's runs: each candidate on the suite's `model:` (or its own), and on every named model of
`models:` that runs it (``candidate@model``); and the `compare:` checks between those runs.

Everything here is decided when the suite is read, so pytest collects one item per run, and `-k`,
markers, thresholds and baselines work on the run names. Errors name the file and line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evalkit.errors import did_you_mean

if TYPE_CHECKING:
    from evalkit.spec import Candidate, ModelConfig, SuiteConfig

SEPARATOR = "@"  # few_shot@q4: candidate few_shot on the model named q4
LATENCY_METRICS = ("latency_p50_s", "latency_p95_s", "requests_per_s")


def expand_runs(reader: Any, config: SuiteConfig, candidates: dict[str, Candidate]) -> dict[str, Candidate]:
    """Every run of the suite, in the order it writes them: each candidate under its own name, then on each
    model of `models:` that runs it. ``reader`` (evalkit.suite's) places errors at their lines."""
    for name in candidates:
        if SEPARATOR in name:  # NAME already refuses it; kept explicit: run names are built with it
            raise reader.error(f"candidate name '{name}' holds '{SEPARATOR}'", "candidates", name)
    for model_name, model in config.models.items():
        reader.usable_name(model_name, "model", "models", model_name, fix_what="not usable in a run name")
        if model.block() == config.model:
            raise reader.error(
                f"models.{model_name} is the suite's own `model:`; every candidate already runs on it under its "
                "own name",
                "models",
                model_name,
                fix=f"drop models.{model_name}, and compare with the candidates' own names",
            )
        for i, listed in enumerate(model.candidates or []):
            if listed not in candidates:
                raise reader.error(
                    f"models.{model_name} runs candidate '{listed}', which the suite does not define"
                    f"{did_you_mean(listed, candidates)}",
                    "models",
                    model_name,
                    "candidates",
                    i,
                    fix=f"candidates are: {', '.join(candidates)}",
                )
            if candidates[listed].model is not None:
                raise reader.error(
                    f"models.{model_name} runs candidate '{listed}', which names its own `model:`",
                    "models",
                    model_name,
                    "candidates",
                    i,
                    fix=f"drop '{listed}' from the list, or its own `model:`",
                )
    runs: dict[str, Candidate] = {}
    for name, candidate in candidates.items():
        runs[name] = _own_model(config, candidate)
        if candidate.model is not None:
            continue
        for model_name, model in config.models.items():
            if model.candidates is None or name in model.candidates:
                run = candidate.on_model(model_name, model)
                runs[run.name] = run
    return runs


def _own_model(config: SuiteConfig, candidate: Candidate) -> Candidate:
    """``candidate`` with `model: q4` read as the model named q4 in `models:`, where there is one."""
    own = candidate.model
    if own is None or own.model_fields_set != {"name"} or own.name not in config.models:
        return candidate
    named = config.models[own.name]
    run = candidate.model_copy(update={"model": named.block(), "markers": [*candidate.markers, *named.markers]})
    run.placed(candidate.name, candidate._base, candidate.line, candidate._suite_markers)
    run._model_name = own.name
    return run


def check_compare(reader: Any, config: SuiteConfig, runs: dict[str, Candidate], per_example: tuple[str, ...]) -> None:
    """Each `compare:` check names two runs of the suite and a metric of one value per example."""
    for i, check in enumerate(config.compare):
        for role in ("candidate", "reference"):
            name = getattr(check, role)
            if name not in runs:
                raise reader.error(
                    f"compare: {role} '{name}' is not a run of this suite{did_you_mean(name, runs)}",
                    "compare",
                    i,
                    role,
                    fix=f"runs are: {', '.join(runs)}",
                )
        if check.max_drop is not None and check.metric not in per_example:
            raise reader.error(
                f"compare: metric '{check.metric}' is not a mean over examples that a paired test can compare",
                "compare",
                i,
                "metric",
                fix=f"use one of: {', '.join(per_example)}",
            )


def served(model: ModelConfig) -> bool:
    """Whether a server answers for ``model`` (so its latency can be measured)."""
    from evalkit.backends import backend_class

    return bool(getattr(backend_class(model.backend), "measures_latency", False))


def check_latency_thresholds(
    reader: Any, runs: dict[str, Candidate], thresholds: dict[str, dict[str, Any]], model_of: Any
) -> None:
    """Latency and throughput are measured on the requests a server answers: a threshold on them for a run
    on an in-process model is refused, at the line that sets it."""
    written = reader.document.get("thresholds") or {}
    for name, own in thresholds.items():
        measured = [m for m in own if m in LATENCY_METRICS]
        model = model_of(name)
        if not measured or served(model):
            continue
        key = name if isinstance(written.get(name), dict) else runs[name].base_name
        raise reader.error(
            f"threshold on {measured[0]} for '{name}', which runs in process (backend: {model.backend}); latency "
            "and throughput are measured on the requests a served model answers",
            "thresholds",
            key,
            measured[0],
            fix="set it for the runs on a served model only (thresholds: {<candidate>@<model>: {...}})",
        )

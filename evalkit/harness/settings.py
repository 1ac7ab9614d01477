"""The `lm_eval:` section of a suite: which lm-evaluation-harness task it runs, and where its data comes
from. Read when the suite is read, without importing lm_eval (``pytest suites/`` starts without it)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from evalkit.backends.base import StrictModel

# lm-eval's own few-shot seed (simple_evaluate's fewshot_random_seed), so demos match its runs
LM_EVAL_FEWSHOT_SEED = 1234
METRIC_NAME = re.compile(r"^[A-Za-z0-9_]+(,[A-Za-z0-9_.-]+)?$")


class LmEvalSettings(StrictModel):
    """An lm-evaluation-harness task run unchanged: its prompts, few-shot sampler, filters, metrics and
    aggregation are lm-eval's; evalkit answers its requests (cache, adapters, served models) and gates."""

    task: str = Field(
        description="a task or group of the installed lm_eval (arc_easy, mmlu_anatomy), or a task YAML of your "
        "own, relative to the suite"
    )
    num_fewshot: int | None = Field(None, ge=0, le=64, description="few-shot examples (default: the task's own)")
    fewshot_seed: int = Field(LM_EVAL_FEWSHOT_SEED, description="seeds lm-eval's few-shot sampler (lm-eval's default)")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N documents of each task")
    metric: str = Field(
        "acc",
        description="the per-document metric an example passes by: the baseline gate, flips and retention compare "
        "it (acc for multiple choice, exact_match for generation; `metric,filter` for a filter other than none)",
    )
    data_files: dict[str, str] | str | None = Field(
        None,
        description="local files in the hub's schema, read with the `json` builder: one file for the task's "
        "evaluation split, or {split: file}; relative to the suite",
    )
    revision: str | None = Field(
        None, description="the hub dataset's revision (a commit or tag), when read from the hub"
    )
    trust_task_code: bool = Field(
        False,
        description="run the Python a task YAML of your own names (`!function`: process_docs, process_results...); "
        "tasks shipped inside lm_eval are a dependency's code and always run",
    )
    apply_chat_template: bool = Field(False, description="render each request through the model's chat template")
    system_instruction: str | None = Field(None, description="a system instruction before each request (lm-eval's)")

    @property
    def own_yaml(self) -> bool:
        """Whether `task:` names a task YAML of the suite's own (a path) rather than a task of lm_eval."""
        return self.task.endswith((".yaml", ".yml"))

    @field_validator("metric")
    @classmethod
    def _metric_name(cls, value: str) -> str:
        if not METRIC_NAME.match(value):
            raise ValueError("name a metric as lm-eval reports it: acc, acc_norm, exact_match or metric,filter")
        return value.removesuffix(",none")


class RetentionSettings(StrictModel):
    """What an adapter must not forget: standard suites (lm-eval tasks or any suite) evaluated on the base model
    and on the base model with the adapter, gated on the paired difference as the baseline gate is."""

    suites: list[str] = Field(
        min_length=1,
        description="suite files, relative to this suite (the first candidate "
        "without an adapter of each is the base run)",
    )
    max_drop: float = Field(0.02, ge=0, le=1, description="largest drop in accuracy that is never a loss")
    alpha: float = Field(0.05, gt=0, lt=1, description="a larger drop is a loss only when McNemar's p < alpha")
    markers: list[str | dict[str, dict[str, Any]]] = Field(
        default_factory=list,
        description="pytest markers of the adapter's retention test (`xfail: {reason: ..., strict: true}` for a "
        "loss that is known and measured)",
    )

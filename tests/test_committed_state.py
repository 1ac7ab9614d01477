"""What the repository commits stays current as the code changes: a new option must not make the demo's
prompt searches stale, its adapters' content hashes move, or its judge a different judge."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from evalkit.data import load_dataset
from evalkit.prompt_search import current_hashes, stale_reason
from evalkit.suite import load_suite

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("suite", "candidate", "artifact"),
    [
        ("suites/tickets.eval.yaml", "searched", "prompts/.search/ticket-routing/searched.json"),
        ("suites/orders.eval.yaml", "searched", "prompts/.search/order-id-extraction/searched.json"),
    ],
)
def test_the_committed_prompt_searches_are_current(suite, candidate, artifact):
    spec = load_suite(ROOT / suite)
    run = spec.candidates[candidate]
    assert run.fewshot_path is not None
    stored = json.loads((ROOT / artifact).read_text())
    pool = load_dataset(run.fewshot_path, id_field=spec.id_field)
    # the model's part is its fingerprint, checked when the search runs; everything else is checked here
    hashes = current_hashes(spec, run, pool, stored["hashes"]["model"])
    assert stale_reason(stored, hashes) is None


def test_an_adapter_that_is_not_a_judges_hashes_as_before_judge_adapters_existed():
    spec = load_suite(ROOT / "suites/tickets.eval.yaml")
    assert "judge" not in spec.train["tickets-lora"].hyperparameters()


def test_a_judge_without_an_adapter_keeps_its_identity():
    from evalkit.judge.scorer import Judge
    from evalkit.testing import ScriptedBackend

    spec = load_suite(ROOT / "suites/answers.eval.yaml")
    judge = spec.scorer()
    assert isinstance(judge, Judge) and judge.settings.adapter is None
    backend = ScriptedBackend(answers={}, default="C")
    # the identity as it was computed before judges could name an adapter: the settings, rubric and judges
    described = judge.settings.model_dump(exclude={"model", "models", "rubric", "calibration", "min_agreement"})
    assert described.pop("adapter") is None
    old = {**described, "rubric_sha256": judge.rubric.sha256, "judges": [backend.fingerprint]}
    assert judge.identity([backend]) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()

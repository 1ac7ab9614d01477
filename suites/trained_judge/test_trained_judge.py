"""The support answers graded by a trained judge (answers.yaml). Training the judge takes about 10 minutes,
so `pytest suites/` skips it; `bash scripts/trained_judge.sh` runs it (EVALKIT_TRAINED_JUDGE=1)."""

import os
from pathlib import Path

import pytest

from evalkit.suite import load_suite

SUITE = Path(__file__).parent / "answers.yaml"

pytestmark = pytest.mark.skipif(
    os.environ.get("EVALKIT_TRAINED_JUDGE") != "1",
    reason="trains a judge adapter (about 10 minutes): bash scripts/trained_judge.sh runs it",
)


@pytest.mark.parametrize("candidate", list(load_suite(SUITE).candidates))
def test_candidate(evalkit, candidate):
    result = evalkit.run(SUITE, candidate=candidate)
    assert result.passed, "\n".join(result.failures)

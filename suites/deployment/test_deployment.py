"""The deployment gate: every run of deployment.yaml, the served ones against the llama.cpp server the
`llama_server` fixture starts. It starts a server, so `pytest suites/` skips it; `bash scripts/deployment.sh`
runs it (EVALKIT_DEPLOYMENT=1)."""

import os
from pathlib import Path

import pytest

from evalkit.suite import load_suite

SUITE = Path(__file__).parent / "deployment.yaml"

pytestmark = pytest.mark.skipif(
    os.environ.get("EVALKIT_DEPLOYMENT") != "1",
    reason="starts a llama.cpp server: bash scripts/deployment.sh runs the deployment gate",
)


@pytest.mark.parametrize("run", list(load_suite(SUITE).candidates))
def test_run(evalkit, llama_server, run):
    result = evalkit.run(SUITE, candidate=run)
    assert result.passed, "\n".join(result.failures)

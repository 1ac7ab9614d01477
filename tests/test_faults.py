"""Faults: a run killed in the middle of a suite loses none of the answers it had already computed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import write_jsonl

ROWS = 48

SLOW_BACKEND = """\
# Slows every generation call and commits the cache every 8 requests, so the test can kill the run
# in the middle of a suite.
import time

import evalkit.cache
from evalkit.backends import hf

evalkit.cache.COMMIT_EVERY = 8
_generate = hf.HFBackend.generate


def _slow_generate(self, requests, **kwargs):
    time.sleep(0.4)
    return _generate(self, requests, **kwargs)


hf.HFBackend.generate = _slow_generate
"""


def _project(root: Path, tiny_model: Path) -> Path:
    write_jsonl(root / "suites" / "orders.jsonl",
                [{"id": f"o{i}", "text": f"Order number {1000 + i * 37} was late", "order": str(1000 + i * 37)}
                 for i in range(ROWS)])
    (root / "suites" / "orders.eval.yaml").write_text(textwrap.dedent(f"""\
        suite: orders
        model: {tiny_model}
        dataset: {{path: orders.jsonl}}
        task: {{kind: generate, target: order, max_new_tokens: 5, scorer: exact_match}}
        candidates:
          plain: {{template: "{{{{ text }}}}\\nOrder:"}}
        """))
    (root / "conftest.py").write_text(SLOW_BACKEND)
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return root


def _pytest(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "suites", *args]


def _stored(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _rows(root: Path, reports: str) -> list[tuple]:
    lines = (root / reports / "latest" / "examples.jsonl").read_text().splitlines()
    return sorted((r["id"], r["output"], r["correct"], r["score"]) for r in map(json.loads, lines))


def test_a_run_killed_with_sigkill_resumes_from_its_finished_batches(tmp_path, tiny_model):
    root = _project(tmp_path, tiny_model)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    database = root / ".evalkit_cache" / "results.sqlite"
    run = subprocess.Popen(_pytest(root), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _stored(database) < 16 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    kept = _stored(database)
    assert run.returncode == -signal.SIGKILL
    assert 16 <= kept < ROWS  # killed in the middle of the suite, after two or more committed batches
    assert not (root / "reports" / "latest").exists()  # nothing half-written

    resumed = subprocess.run(_pytest(root), cwd=root, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"result cache {root / '.evalkit_cache'}: {kept} of {ROWS} requests answered from it" in resumed.stdout
    assert _stored(database) == ROWS

    fresh = subprocess.run(_pytest(root, "--evalkit-no-cache", "--evalkit-reports", "uninterrupted"), cwd=root,
                           env=env, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stdout[-3000:]
    assert _rows(root, "reports") == _rows(root, "uninterrupted")

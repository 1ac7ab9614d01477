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

import pytest

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
    write_jsonl(
        root / "suites" / "orders.jsonl",
        [
            {"id": f"o{i}", "text": f"Order number {1000 + i * 37} was late", "order": str(1000 + i * 37)}
            for i in range(ROWS)
        ],
    )
    (root / "suites" / "orders.eval.yaml").write_text(
        textwrap.dedent(f"""\
        suite: orders
        model: {tiny_model}
        dataset: {{path: orders.jsonl}}
        task: {{kind: generate, target: order, max_new_tokens: 5, scorer: exact_match}}
        candidates:
          plain: {{template: "{{{{ text }}}}\\nOrder:"}}
        """)
    )
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

    fresh = subprocess.run(
        _pytest(root, "--evalkit-no-cache", "--evalkit-reports", "uninterrupted"),
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert fresh.returncode == 0, fresh.stdout[-3000:]
    assert _rows(root, "reports") == _rows(root, "uninterrupted")


SLOW_TRAINING = """\
# Slows every optimiser step, so the test can kill the training between its epoch checkpoints.
import time

import transformers

_step = transformers.Trainer.training_step


def _slow_step(self, *args, **kwargs):
    time.sleep(0.15)
    return _step(self, *args, **kwargs)


transformers.Trainer.training_step = _slow_step
"""


def _training_project(root: Path, tiny_model: Path) -> Path:
    from tests.conftest import COLOUR_SUITE, colour_rows

    write_jsonl(root / "suites" / "data" / "train.jsonl", colour_rows(96, 1, "tr", range(100, 550)))
    write_jsonl(root / "suites" / "data" / "test.jsonl", colour_rows(40, 2, "te", range(550, 1000)))
    suite = COLOUR_SUITE.format(model=tiny_model, epochs=2, layers="[q_proj, v_proj]").replace(
        "output: adapters/", "output: ../adapters/"
    )
    (root / "suites" / "colours.eval.yaml").write_text(suite)
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return root


def test_a_training_killed_with_sigkill_leaves_no_adapter_and_resumes(tmp_path, tiny_model):
    from evalkit.train import read_record

    root = _training_project(tmp_path / "killed", tiny_model)
    (root / "conftest.py").write_text(SLOW_TRAINING)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    checkpoints = root / "adapters" / ".colours-lora.partial" / "checkpoints"
    first_epoch = checkpoints / "checkpoint-11" / "trainer_state.json"  # an epoch is 11 steps
    run = subprocess.Popen(_pytest(root), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not first_epoch.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # into the second epoch
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL
    assert not (root / "adapters" / "colours-lora").exists()  # no adapter that loads as complete
    # A kill in the middle of writing the next checkpoint leaves it without its trainer_state.json.
    cut_short = checkpoints / "checkpoint-22"
    cut_short.mkdir()
    (cut_short / "adapter_model.safetensors").write_bytes(b"partial")

    resumed = subprocess.run(_pytest(root, "-v"), cwd=root, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    record = read_record(root / "adapters" / "colours-lora")
    assert record["resumed_from"] == "checkpoint-11"
    assert record["global_steps"] == 22
    assert not (root / "adapters" / ".colours-lora.partial").exists()

    fresh_root = _training_project(tmp_path / "uninterrupted", tiny_model)
    fresh = subprocess.run(_pytest(fresh_root), cwd=fresh_root, env=env, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stdout[-3000:]
    uninterrupted = read_record(fresh_root / "adapters" / "colours-lora")
    assert uninterrupted["resumed_from"] is None
    curve = {p["step"]: p["loss"] for p in uninterrupted["loss_curve"]}
    assert [p["loss"] for p in record["loss_curve"]] == [
        pytest.approx(curve[p["step"]], rel=1e-4) for p in record["loss_curve"]
    ]
    resumed_rows = [r for r in map(json.loads, (root / "reports/latest/examples.jsonl").read_text().splitlines())]
    fresh_rows = [r for r in map(json.loads, (fresh_root / "reports/latest/examples.jsonl").read_text().splitlines())]
    assert [(r["candidate"], r["id"], r["output"]) for r in resumed_rows] == [
        (r["candidate"], r["id"], r["output"]) for r in fresh_rows
    ]


def test_two_runs_of_a_sampled_suite_write_identical_rows(tmp_path, tiny_model):
    """Determinism across processes, in the hardest case: sampled generation with repeats, computed anew
    (no cache) each time, in processes with different hash seeds."""
    root = _project(tmp_path, tiny_model)
    (root / "conftest.py").unlink()  # no slowing down
    suite = root / "suites" / "orders.eval.yaml"
    suite.write_text(
        suite.read_text().replace("scorer: exact_match}", "scorer: exact_match, temperature: 8.0, repeats: 3, seed: 7}")
    )
    rows = []
    for run, hash_seed in (("first", "1"), ("second", "2")):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            _pytest(root, "--evalkit-no-cache", "--evalkit-reports", run),
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode in (0, 1), done.stdout[-3000:]
        rows.append((root / run / "latest" / "examples.jsonl").read_bytes())
    assert rows[0] == rows[1]
    repeats = [json.loads(line)["details"]["outputs"] for line in rows[0].decode().splitlines()]
    assert len(repeats) == ROWS and sum(len(set(outputs)) > 1 for outputs in repeats) > ROWS // 2  # really sampled

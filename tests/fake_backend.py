"""A backend that a test installs through the ``evalkit.backends`` entry-point group (see test_backends.py).

It is a keyword model: a choice scores higher when the prompt mentions it, and generation repeats the
first word of the prompt's last line. Every call is appended to the file named by FAKE_BACKEND_LOG, so a
test can count what reached the model.
"""

from __future__ import annotations

import os

from pydantic import Field

from evalkit.backends.base import Backend, ChoiceResult, GenerateResult, ModelIdentity, StrictModel


def _log(event: str, n: int = 0) -> None:
    path = os.environ.get("FAKE_BACKEND_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{event} {n}\n")


class FakeBackend(Backend):
    class Settings(StrictModel):
        """The backend's own keys in a suite's `model:` block."""

        miss: float = Field(-1.0, le=0, description="log-probability of a choice the prompt does not mention")

    def __init__(self, name: str, miss: float) -> None:
        self.identity = ModelIdentity(f"keyword-model-{name}", "none")
        self.miss = miss

    @classmethod
    def from_config(cls, model, base_dir, *, notify=None) -> FakeBackend:
        return cls(model.name, cls.settings(model).miss)

    def _load(self) -> None:
        _log("load")

    def apply_chat_template(self, messages) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def score_choices(self, requests):
        _log("score_choices", len(requests))
        results = []
        for r in requests:
            text = r.context.lower()
            logprobs = tuple(
                -0.5 if c.strip().lower() in text else self.miss - 0.1 * i for i, c in enumerate(r.continuations)
            )
            results.append(
                ChoiceResult(logprobs, (False,) * len(logprobs), len(text.split()), tuple(1 for _ in r.continuations))
            )
        return results

    def generate(self, requests):
        _log("generate", len(requests))
        out = []
        for r in requests:
            words = r.prompt.strip().splitlines()[-1].split()
            out.append(GenerateResult(words[0] if words else "", len(r.prompt.split()), 1))
        return out

"""Who answers for a served model: what the server lists under ``/v1/models`` (asked once), and the
identity of a model derived from it, which keys the result cache."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from evalkit.backends.base import ModelIdentity
from evalkit.backends.served_client import ServerClient
from evalkit.errors import ModelError

VOLATILE_MODEL_FIELDS = ("created",)  # vLLM reports the time of the request as `created`


class ServedModels:
    """The models and adapters a server serves, fetched on first need."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client
        self._served: dict[str, dict[str, Any]] | None = None

    def listed(self) -> dict[str, dict[str, Any]]:
        """What ``/v1/models`` lists: model id -> its entry (fetched once)."""
        if self._served is None:
            self._served = self.client.models()
        return self._served

    def entry(self, name: str) -> dict[str, Any]:
        """The entry of model ``name``; ModelError, naming those it serves, when the server serves none."""
        served = self.listed()
        if name not in served:
            raise ModelError(
                f"the server at {self.client.url} serves no model '{name}'; it serves: "
                f"{', '.join(sorted(served)) or 'nothing'}",
                fix="set the suite's `model: {name: ...}` to one of those ids",
            )
        return served[name]

    def require_adapter(self, name: str) -> None:
        """ModelError unless the server serves the adapter ``name``."""
        if name not in self.listed():
            raise ModelError(
                f"the server at {self.client.url} does not serve the adapter '{name}'; it serves: "
                f"{', '.join(sorted(self.listed()))}",
                fix=f"start vLLM with --enable-lora --lora-modules {name}=PATH (rank at most "
                "--max-lora-rank, 16 by default), or load it with POST /v1/load_lora_adapter",
            )

    def identity(self, name: str, revision: str | None, extra_body: dict[str, Any]) -> ModelIdentity:
        """Model ``name``'s id, what ``/v1/models`` says of it (its volatile fields left out), the suite's
        ``revision`` pin and ``extra_body``: a server whose model changed gives new cache keys."""
        entry = {k: v for k, v in self.entry(name).items() if k not in VOLATILE_MODEL_FIELDS}
        described = json.dumps([name, entry, revision, extra_body], sort_keys=True, default=str)
        return ModelIdentity(hashlib.sha256(described.encode()).hexdigest()[:16], "served")

"""Model backends, found by name: ``hf`` (in process, transformers + peft), ``openai`` (a model behind an
OpenAI-compatible server) and ``scripted`` (the test double of :mod:`evalkit.testing`, published under the ``evalkit.backends``
entry-point group like a third-party backend, so it is imported only by a suite that names it) are built
in; other packages register theirs under the same group.

:mod:`evalkit.backends.base` defines the interface and the batch-first request and result types.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.backends.base import BACKENDS, Backend, ModelConfig, Notify


def backend_names() -> list[str]:
    """Every backend a suite may name, the built-in ones included."""
    import evalkit.backends.hf  # registers itself; cheap: torch loads with the weights
    import evalkit.backends.served  # noqa: F401  (the openai backend; its client loads on the first request)

    return BACKENDS.names()


def backend_class(name: str) -> type[Backend]:
    """The Backend class registered as ``name``; ModelError when there is none or it fails to import."""
    backend_names()
    return BACKENDS.get(name)


def open_backend(model: ModelConfig, base_dir: Path, *, notify: Notify | None = None) -> Backend:
    """The backend a ``model:`` block names, built without loading weights."""
    return backend_class(model.backend).from_config(model, base_dir, notify=notify)

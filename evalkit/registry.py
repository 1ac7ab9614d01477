"""One way to make parts pluggable: a named registry filled by a decorator and by an entry-point group.

Backends, task kinds, scorers and perturbations each have a :class:`Registry`. Built-in parts register
themselves with the decorator when their module is imported; third-party packages publish theirs under
the registry's entry-point group (``evalkit.backends``, ``evalkit.scorers``, ...). Entry points are listed
once, on the first lookup, and each is imported only when its name is asked for, so a broken package
costs nothing until a suite uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from evalkit.errors import EvalkitError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Parts of one kind by name: registered in code, or published under ``group`` by another package.

    ``adapt`` turns what an entry point loads into a registered part (for example a plain function into
    the part's record); by default the loaded object is the part. :meth:`get` raises ``error`` (an
    EvalkitError subclass) for a name nobody registered or a package that fails to import."""

    def __init__(
        self,
        kind: str,
        group: str,
        *,
        adapt: Callable[[str, object], T] | None = None,
        error: type[EvalkitError] = EvalkitError,
    ) -> None:
        self.kind = kind
        self.group = group
        self._adapt = adapt
        self._error = error
        self._parts: dict[str, T] = {}
        self._pending: dict[str, EntryPoint] = {}
        self._scanned = False

    def add(self, name: str, part: T) -> T:
        """Register ``part`` under ``name`` (a later registration of the same name replaces it)."""
        self._parts[name] = part
        self._pending.pop(name, None)
        return part

    def remove(self, name: str) -> None:
        """Forget ``name`` (registered in code or found as an entry point)."""
        self._parts.pop(name, None)
        self._pending.pop(name, None)

    def copy(self) -> Registry[T]:
        """A registry with the same parts whose entry points are listed again on first use."""
        other: Registry[T] = Registry(self.kind, self.group, adapt=self._adapt, error=self._error)
        other._parts = dict(self._parts)
        return other

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorate(part: T) -> T:
            return self.add(name, part)

        return decorate

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._parts:
                self._pending[ep.name] = ep

    def names(self) -> list[str]:
        """Every registered name, entry points included (none of them imported), sorted."""
        self._scan()
        return sorted({*self._parts, *self._pending})

    def __contains__(self, name: object) -> bool:
        self._scan()
        return name in self._parts or name in self._pending

    def unknown(self, name: str) -> str:
        """The message for a name nobody registered: "unknown <kind> 'x'" with a did-you-mean."""
        return f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}"

    def get(self, name: str) -> T:
        """The part registered as ``name``; the registry's error, with the fix, when there is none or its
        package fails to import."""
        self._scan()
        if name in self._parts:
            return self._parts[name]
        if name not in self._pending:
            raise self._error(
                self.unknown(name),
                fix=f"use one of: {', '.join(self.names())}, or register one "
                f"under the '{self.group}' entry-point group",
            )
        ep = self._pending[name]
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken third-party package must not crash the run
            raise self._error(
                f"{self.kind} '{name}' from entry point '{ep.value}' failed to import: {exc}",
                fix="reinstall the package that provides it",
            ) from exc
        part = self._adapt(name, loaded) if self._adapt is not None else loaded
        return self.add(name, part)

"""One way to make parts pluggable: a named registry filled by a decorator and by an entry-point group.

Backends, task kinds, scorers and perturbations each have a :class:`Registry`. Built-in parts register
themselves with the decorator when their module is imported; third-party packages publish theirs under
the registry's entry-point group (``evalkit.backends``, ``evalkit.scorers``, ...). Entry points are listed
once, on the first lookup, and each is imported only when its name is asked for, so a broken package
costs nothing until a suite uses it.

A name is taken once: a second part under a taken name is refused with both named (the same definition
registered again, as when its module is imported a second time, is not a second part), unless the caller
replaces it on purpose (``add(name, part, replace=True)``). A registry that knows the type of its parts
(``instance_of=`` or ``subclass_of=``) refuses a part of another type, from code or from an entry point.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from evalkit.errors import EvalkitError, did_you_mean

T = TypeVar("T")


def definition(part: object) -> str:
    """Where ``part`` is defined, as ``module.qualname``: the class or function itself, the function a
    record wraps (its ``factory``), or else the class it is an instance of."""
    for candidate in (part, getattr(part, "factory", None)):
        module, qualname = getattr(candidate, "__module__", None), getattr(candidate, "__qualname__", None)
        if isinstance(module, str) and isinstance(qualname, str):
            return f"{module}.{qualname}"
    return f"{type(part).__module__}.{type(part).__qualname__}"


def described(part: object) -> str:
    """``part`` as a message names it: "class m.C", "function m.f", or "'text' (a builtins.str)"."""
    if isinstance(part, type):
        return f"class {definition(part)}"
    if callable(part) and hasattr(part, "__qualname__"):
        return f"function {definition(part)}"
    return f"{reprlib.repr(part)} (a {type(part).__module__}.{type(part).__qualname__})"


class Registry(Generic[T]):
    """Parts of one kind by name: registered in code, or published under ``group`` by another package.

    ``adapt`` turns what an entry point loads into a registered part (for example a plain function into
    the part's record); by default the loaded object is the part. ``instance_of`` (a class, or a
    runtime-checkable protocol) or ``subclass_of`` (for a registry of classes) is what every part must be.
    :meth:`get` raises ``error`` (an EvalkitError subclass) for a name nobody registered or a package that
    fails to import; :meth:`add` raises it for a taken name or a part of the wrong type."""

    def __init__(
        self,
        kind: str,
        group: str,
        *,
        adapt: Callable[[str, object], T] | None = None,
        error: type[EvalkitError] = EvalkitError,
        instance_of: type | None = None,
        subclass_of: type | None = None,
    ) -> None:
        if instance_of is not None and subclass_of is not None:
            raise TypeError("a registry holds instances or classes: give instance_of or subclass_of, not both")
        self.kind = kind
        self.group = group
        self.instance_of = instance_of
        self.subclass_of = subclass_of
        self._adapt = adapt
        self._error = error
        self._parts: dict[str, T] = {}
        self._pending: dict[str, EntryPoint] = {}
        self._shadowed: dict[str, EntryPoint] = {}  # entry points under a name registered in code
        self._twins: dict[str, list[EntryPoint]] = {}  # two packages publishing one name
        self._scanned = False

    @property
    def expected(self) -> str | None:
        """What every part must be, in words ("a subclass of m.C"); None when anything goes."""
        if self.subclass_of is not None:
            return f"a subclass of {definition(self.subclass_of)}"
        if self.instance_of is not None:
            return f"an instance of {definition(self.instance_of)}"
        return None

    def _fits(self, part: object) -> bool:
        if self.subclass_of is not None:
            return isinstance(part, type) and issubclass(part, self.subclass_of)
        return self.instance_of is None or isinstance(part, self.instance_of)

    def add(self, name: str, part: T, *, replace: bool = False) -> T:
        """Register ``part`` under ``name``. A name already taken by another definition is refused (the
        error names both) unless ``replace`` is true; a part of the wrong type is always refused."""
        if not self._fits(part):
            expected = (self.subclass_of or self.instance_of).__name__  # type: ignore[union-attr]
            raise self._error(
                f"{self.kind} '{name}' must be {self.expected}; got {described(part)}",
                fix=f"register {'a subclass of' if self.subclass_of else 'an instance of'} {expected}",
            )
        if name in self._parts and not replace:
            taken = definition(self._parts[name])
            if taken != definition(part):  # the same definition again is its module imported a second time
                raise self._error(
                    f"{self.kind} '{name}' is already registered ({taken}); {definition(part)} cannot take its name",
                    fix=f"give it another name, or replace it on purpose: add('{name}', part, replace=True)",
                )
        self._parts[name] = part
        if not replace and name in self._pending:  # code registers a name a package also publishes
            self._shadowed[name] = self._pending[name]
        self._pending.pop(name, None)
        if replace:
            self._shadowed.pop(name, None)
            self._twins.pop(name, None)
        return part

    def remove(self, name: str) -> None:
        """Forget ``name`` (registered in code or found as an entry point)."""
        self._parts.pop(name, None)
        self._pending.pop(name, None)
        self._shadowed.pop(name, None)
        self._twins.pop(name, None)

    def copy(self) -> Registry[T]:
        """A registry with the same parts whose entry points are listed again on first use."""
        other: Registry[T] = Registry(
            self.kind,
            self.group,
            adapt=self._adapt,
            error=self._error,
            instance_of=self.instance_of,
            subclass_of=self.subclass_of,
        )
        other._parts = dict(self._parts)
        return other

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorate(part: T) -> T:
            return self.add(name, part, replace=replace)

        return decorate

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for ep in entry_points(group=self.group):
            if ep.name in self._parts:
                self._shadowed[ep.name] = ep
            elif ep.name in self._pending and self._pending[ep.name].value != ep.value:
                self._twins.setdefault(ep.name, [self._pending[ep.name]]).append(ep)
            else:
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
        """The part registered as ``name``; the registry's error, with the fix, when there is none, its
        package fails to import, it is of the wrong type, or two definitions claim the name."""
        self._scan()
        if name in self._twins:
            published = " and ".join(f"'{ep.value}'" for ep in self._twins[name])
            raise self._error(
                f"{self.kind} '{name}' is published by two entry points: {published}",
                fix="uninstall one of the packages, or rename one of the entry points",
            )
        if name in self._shadowed:  # imported now, to tell one definition registered twice from two
            ep = self._shadowed.pop(name)
            self._refuse_another(name, self._load(name, ep), ep)
        if name in self._parts:
            return self._parts[name]
        if name not in self._pending:
            raise self._error(
                self.unknown(name),
                fix=f"use one of: {', '.join(self.names())}, or register one "
                f"under the '{self.group}' entry-point group",
            )
        ep = self._pending[name]
        part = self._load(name, ep)
        self._pending.pop(name, None)
        if name in self._parts:  # importing the entry point's module registered the name in code
            self._shadowed.pop(name, None)
            self._refuse_another(name, part, ep)
            return self._parts[name]
        return self.add(name, part)

    def _refuse_another(self, name: str, published: object, ep: EntryPoint) -> None:
        """Refuse an entry point that publishes another definition under a name registered in code."""
        taken = self._parts[name]
        if published is not taken and definition(published) != definition(taken):
            raise self._error(
                f"{self.kind} '{name}' is registered twice: by {definition(taken)} and by entry point '{ep.value}'",
                fix="uninstall the package that publishes it, or rename its entry point",
            )

    def _load(self, name: str, ep: EntryPoint) -> T:
        """The part entry point ``ep`` publishes as ``name``, imported, adapted and of the registry's type."""
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken third-party package must not crash the run
            raise self._error(
                f"{self.kind} '{name}' from entry point '{ep.value}' failed to import: {exc}",
                fix="reinstall the package that provides it",
            ) from exc
        part = self._adapt(name, loaded) if self._adapt is not None else loaded
        if not self._fits(part):
            raise self._error(
                f"{self.kind} '{name}' from entry point '{ep.value}' must be {self.expected}; got {described(part)}",
                fix=f"point the entry point at {self.expected}",
            )
        return part

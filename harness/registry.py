"""Name → object registries, filled by decorators and by entry points, materialised lazily.

An entry is either a loaded object or a `"module:attr"` placeholder (a built-in or a plug-in entry
point); placeholders are imported on first `get`, so listing never imports torch or a backbone module,
and a broken plug-in only fails when it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

from harness.errors import PluginError, UnknownNameError

T = TypeVar("T")


@dataclass
class Entry:
    name: str
    target: str | None = None  # "module:attr" while lazy
    obj: Any = None
    source: str = "builtin"  # builtin | plugin:<dist> | decorator
    meta: dict[str, Any] = field(default_factory=dict)


def import_target(target: str) -> Any:
    """Import `"pkg.module:attr.sub"` (or a bare module path)."""
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """A typed, lazy registry with did-you-mean errors (the lm-eval / timm pattern)."""

    def __init__(self, kind: str, base_cls: type | None = None, entry_point_group: str | None = None):
        self.kind = kind
        self.base_cls = base_cls
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._families: dict[str, Entry] = {}  # prefix → its factory ("module:attr"), see `add_family`
        self._members: dict[str, Entry] = {}  # "prefix:rest" names asked for so far
        self._plugins_scanned = False

    # -- filling -------------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None, **meta: Any) -> Callable[[T], T] | T:
        """Register `obj` under `name`; usable as `@registry.register("name")`."""

        def add(o: T) -> T:
            self._check_type(name, o)
            existing = self._entries.get(name)
            if existing is not None and existing.obj is not None and existing.obj is not o:
                if getattr(existing.obj, "__qualname__", None) != getattr(o, "__qualname__", object()):
                    raise PluginError(f"{self.kind} '{name}' is registered twice ({existing.obj!r} and {o!r})")
            if existing is not None:  # a placeholder (or re-import) becomes the real object
                existing.obj = o
                existing.meta = {**existing.meta, **meta}
            else:
                self._entries[name] = Entry(name=name, obj=o, source="decorator", meta=meta)
            return o

        return add if obj is None else add(obj)

    def add_lazy(self, name: str, target: str, source: str = "builtin", **meta: Any) -> None:
        """Declare `name` without importing it. Built-ins win over plug-ins of the same name."""
        if name in self._entries and source.startswith("plugin"):
            return
        self._entries[name] = Entry(name=name, target=target, source=source, meta=meta)

    def add_family(self, prefix: str, factory: str, **meta: Any) -> None:
        """Declare a family: any name `prefix:<rest>` (`timm:convnext_tiny`) resolves to `factory(rest)`, imported
        on first use, which builds the object for that member (a backbone class for that model) or raises a
        one-line error naming it. Members are never part of `names()`: the family is listed, not its members."""
        self._families[prefix] = Entry(name=f"{prefix}:", target=factory, meta=meta)

    def families(self) -> list[Entry]:
        return [self._families[p] for p in sorted(self._families)]

    def _member(self, name: str) -> Entry | None:
        """The entry of a family member name (made on first ask), or None when no family has its prefix."""
        prefix, sep, rest = name.partition(":")
        if not sep or not rest or prefix not in self._families:
            return None
        if name not in self._members:
            family = self._families[prefix]
            self._members[name] = Entry(name=name, target=family.target, source=f"family:{prefix}",
                                        meta={**family.meta, "family": prefix, "member": rest, "in_all": False})
        return self._members[name]

    def _scan_plugins(self) -> None:
        if self._plugins_scanned or not self.entry_point_group:
            return
        self._plugins_scanned = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            dist = getattr(ep.dist, "name", "?") if getattr(ep, "dist", None) else "?"
            self.add_lazy(ep.name, ep.value, source=f"plugin:{dist}")

    def _check_type(self, name: str, obj: Any) -> None:
        if self.base_cls is not None and not (isinstance(obj, type) and issubclass(obj, self.base_cls)):
            raise PluginError(f"{self.kind} '{name}' must be a subclass of {self.base_cls.__name__}, got {obj!r}")

    # -- reading -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._scan_plugins()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        for name in self.names():
            yield self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def entry(self, name: str) -> Entry:
        self._scan_plugins()
        if name in self._entries:
            return self._entries[name]
        member = self._member(name)
        if member is not None:
            return member
        known = [*self._entries, *(f"{p}:<name>" for p in self._families)]
        raise UnknownNameError(self.kind, name, known) from None

    def get(self, name: str) -> T:
        """The registered object, importing its module on first use."""
        entry = self.entry(name)
        if entry.obj is None and "family" in entry.meta:
            factory = import_target(entry.target or "")
            loaded = factory(entry.meta["member"])  # a one-line HarnessError for an unknown member
            self._check_type(name, loaded)
            entry.obj = loaded
        if entry.obj is None:
            try:
                loaded = import_target(entry.target or "")
            except Exception as exc:  # a broken plug-in must say which one
                raise PluginError(f"cannot load {self.kind} '{name}' from '{entry.target}' ({entry.source}): "
                                  f"{type(exc).__name__}: {exc}") from exc
            if entry.obj is None:  # the import may have registered it through the decorator already
                self._check_type(name, loaded)
                entry.obj = loaded
        return entry.obj

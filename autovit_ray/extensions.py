"""Named extensions: one `Registry` per extension point (latency backends, search strategies, block
kinds, datasets).

A registry maps a name to a class or a factory. The built-in entries register where they are
defined; yours register from your own code (`registry.register(name)`, a decorator) or, in a package
that others install, through an entry point of the registry's group in its pyproject.toml:

    [project.entry-points."autovit_ray.backends"]
    my-npu = "my_package.npu:NPUBackend"

The entry points are read lazily: the first time a name is not registered, the modules named in
`AUTOVIT_RAY_PLUGINS` are imported (`plugins.py`: a module of yours that registers, in every process of a
run), then the entry point of that name is loaded and registered (so installing a plugin costs nothing
until it is asked for). Every caller asks
the registry; no code branches on an extension's name. See docs/extending.md. Pure Python.

("Registry" here is a table of named extensions; MLflow's model registry is `autovit_ray.registry`.)
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .config import warn_renamed
from .plugins import load_plugins

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries of one kind of extension.

    `kind` names the kind in messages ("latency backend"); `entry_point_group` is where installed
    packages declare theirs; `renamed` maps old names to today's (they resolve with a FutureWarning);
    `check(name, entry)` raises ValueError for an entry that cannot serve (a wrong type); `instance_of`
    asks that entries be instances of a class that names them (`entry.name`, which must be the registered
    name); `hint` ends the error for an unknown name (how to provide one)."""

    def __init__(self, kind: str, entry_point_group: str | None = None, renamed: Mapping[str, str] | None = None,
                 check: Callable[[str, T], None] | None = None, instance_of: type | None = None,
                 hint: str = "") -> None:
        self.kind, self.entry_point_group = kind, entry_point_group
        self.renamed = dict(renamed or {})
        self._check = check
        self.instance_of = instance_of
        self.hint = hint
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None, *, replace: bool = False) -> Any:
        """Register `entry` under `name` and return it; without `entry`, a decorator that does so.
        A name already taken by another entry is refused unless `replace` (say so to override one)."""
        if entry is None:
            def decorator(entry: T) -> T:
                return self.register(name, entry, replace=replace)
            return decorator
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f"a {self.kind} name must be a non-empty string without surrounding spaces, got {name!r}")
        if name in self.renamed:
            raise ValueError(f"{name!r} is the old name of the {self.kind} {self.renamed[name]!r}; "
                             "register yours under another name")
        if self.instance_of is not None:
            if not isinstance(entry, self.instance_of):
                raise ValueError(f"{self.kind} {name!r} must be a {self.instance_of.__name__} instance, got "
                                 f"{type(entry).__name__}")
            if getattr(entry, "name", None) != name:
                raise ValueError(f"a {self.kind} registers under its own name: {name!r} for the "
                                 f"{type(entry).__name__} named {getattr(entry, 'name', None)!r}")
        if self._check is not None:
            self._check(name, entry)
        taken = self._entries.get(name)
        if taken is not None and taken is not entry and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered ({_describe(taken)}); pass "
                             "replace=True to replace it, or choose another name")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove `name` (a test's clean-up, or before registering a replacement); returns its entry."""
        if name not in self._entries:
            raise ValueError(f"{self.kind} {name!r} is not registered: registered are {list(self._entries)}")
        return self._entries.pop(name)

    @contextlib.contextmanager
    def registered(self, name: str, entry: T) -> Iterator[T]:
        """`entry` registered under `name` inside a `with` block only (a test's extension)."""
        self.register(name, entry)
        try:
            yield entry
        finally:
            self.unregister(name)

    def resolve(self, name: str, where: str = "") -> str:
        """Today's name of `name`: itself, or (with a FutureWarning) the new name of an old one."""
        if name in self.renamed:
            new = self.renamed[name]
            warn_renamed(f"{self.kind} {name!r}", repr(new), where)
            return new
        return name

    def get(self, name: str) -> T:
        """The entry of `name` (an old name resolves with a FutureWarning); an installed package's entry
        point is loaded the first time its name is asked for. Unknown: ValueError listing the names."""
        name = self.resolve(name)
        if name not in self._entries:
            load_plugins()  # the modules of AUTOVIT_RAY_PLUGINS register theirs
        if name not in self._entries:
            point = self._entry_points().get(name)
            if point is not None:
                try:
                    loaded = point.load()
                except Exception as exc:  # a plugin's import error: say which plugin it was
                    raise ValueError(f"{self.kind} {name!r}: loading entry point {point.value!r} of group "
                                     f"{self.entry_point_group!r} failed: {type(exc).__name__}: {exc}") from exc
                self.register(name, loaded)
        if name not in self._entries:
            hint = f" ({self.hint})" if self.hint else ""
            raise ValueError(f"unknown {self.kind} {name!r}; allowed: {list(self.names())}{hint}")
        return self._entries[name]

    def entries(self) -> dict[str, T]:
        """{name: entry} registered now (a copy), without importing plugins or loading entry points."""
        return dict(self._entries)

    def names(self) -> tuple[str, ...]:
        """Registered names (in registration order), then those of installed entry points not loaded yet."""
        return (*self._entries, *(n for n in sorted(self._entry_points()) if n not in self._entries))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._entry_points())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self.names())})"

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        if self.entry_point_group is None:
            return {}
        return _entry_points(self.entry_point_group, tuple(sys.path))


@functools.lru_cache(maxsize=64)
def _entry_points(group: str, search_path: tuple[str, ...]) -> dict[str, importlib.metadata.EntryPoint]:
    """{name: entry point} of `group` among the packages `search_path` holds. Scanning the installed
    distributions takes milliseconds and spaces are loaded often (every space offers the installed input
    profiles), so a scan is kept until `sys.path` changes."""
    return {point.name: point for point in importlib.metadata.entry_points(group=group)}


def _describe(entry: Any) -> str:
    return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', type(entry).__name__)}"

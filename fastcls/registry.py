"""One registry type for every extension point: architectures' aliases, strategies, optimisers,
schedules, augmentation presets, trackers, sensitivity and vote methods, plots, recipe steps, ...

A registry is a read-only mapping from a name to its entry, so `names()` feeds help texts and
parametrised tests, and `lookup` is the one place that turns an unknown name into the user's error:
"<kind> 'x' is not one of a, b, c. Did you mean: ...?". New entries arrive with `register`, as a
call or a decorator, in the module that implements them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from fastcls.errors import ConfigError, FastclsError, did_you_mean

__all__ = ["Registry"]

T = TypeVar("T")
_MISSING: Any = object()


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind. `kind` starts the error message ("optimiser", "--format");
    `hint` follows the list of names in it (e.g. " (freeze-to takes :K)")."""

    def __init__(
        self,
        kind: str,
        entries: Mapping[str, T] | None = None,
        *,
        hint: str = "",
        error: type[FastclsError] = ConfigError,
    ) -> None:
        self.kind = kind
        self.hint = hint
        self.error = error
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, entry: T) -> T: ...
    def register(self, name: str, entry: T = _MISSING) -> T | Callable[[T], T]:
        """Add `entry` under `name` (or, without an entry, a decorator that adds what it decorates).
        A name registered twice is a bug in the code that registers it, not a user error."""
        if entry is _MISSING:
            return lambda decorated: self.register(name, decorated)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def unknown(self, name: Any, prefix: str = "") -> str:
        """The message for a name that is not registered: the names there are and the closest ones."""
        return (
            f"{prefix}{self.kind} {name!r} is not one of {', '.join(self._entries)}{self.hint}."
            f"{did_you_mean(str(name), self._entries)}"
        )

    def lookup(self, name: Any, prefix: str = "", error: type[FastclsError] | None = None) -> T:
        """The entry named `name`; an unknown name raises `error` (the registry's own by default)."""
        if name not in self._entries:
            raise (error or self.error)(self.unknown(name, prefix))
        return self._entries[name]

    def check(self, name: Any, prefix: str = "") -> str:
        """`name` itself when it is registered (for validating settings); else the lookup error."""
        self.lookup(name, prefix)
        return name

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

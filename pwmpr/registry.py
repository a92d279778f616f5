"""Registry: name -> factory, filled by decorators next to each definition (timm-style)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pwmpr.errors import PwmprError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories for one kind of component (model, data set, growth rule, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator filing the decorated object under ``name`` (default: its ``__name__``)."""

        def deco(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._entries:
                # A clash is a bug, not a configuration choice: fail at import time.
                raise RuntimeError(f"duplicate {self.kind} name {key!r}")
            self._entries[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises PwmprError listing the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names())
            raise PwmprError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """All registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

"""One tiny name -> object registry per kind of thing (models, benchmarks, metrics, presets)."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from evalsuite.errors import DistarError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries; unknown names raise a DistarError listing every choice."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def add(self, name: str, entry: T, description: str = "") -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._entries[name] = entry
        self._descriptions[name] = description
        return entry

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda entry: self.add(name, entry, description)

    def get(self, name: str) -> T:
        if name not in self._entries:
            choices = ", ".join(sorted(self._entries))
            raise DistarError(f"Unknown {self.kind} '{name}'. Choose one of: {choices}")
        return self._entries[name]

    def describe(self) -> dict[str, str]:
        return dict(sorted(self._descriptions.items()))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

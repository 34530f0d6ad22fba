"""One tiny name -> object registry per kind of thing (models, benchmarks, metrics, presets).

An entry may be a lazy reference, the string "package.module:attr": `load(name)` imports it on
first use, so listing a registry never imports a model, and a package can register its plug-ins
into another package's registry without that package ever naming it (di_star's toy digits
plug-ins live in evalsuite's registries this way; see di_star/plugins.py).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

from distar.core.errors import DistarError

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

    def load(self, name: str) -> Any:
        """The entry, with a "module:attr" string entry imported and resolved."""
        entry = self.get(name)
        if isinstance(entry, str):
            return resolve_ref(entry)
        return entry

    def describe(self) -> dict[str, str]:
        return dict(sorted(self._descriptions.items()))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def resolve_ref(ref: str) -> Any:
    """Import "package.module:attr" and return the attribute."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"a lazy registry entry must look like 'package.module:attr', got {ref!r}")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj

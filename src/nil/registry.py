"""One registry pattern for every pluggable part (generator, segmenter, encoder, interpolator, sim, teacher).

A `Registry` maps a name to a factory. Built-in entries whose modules are heavy (diffusers, transformers,
mujoco-warp) are listed as `lazy` module paths: the module is imported on first use and registers
itself with the `register` decorator, so `names()` lists them without importing them. A user's plugin
registers the same way a built-in does, and is then reachable from skill.yaml by its name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from nil.errors import ConfigError

F = TypeVar("F", bound=Callable[..., object])


class Registry(Generic[F]):
    """Name -> factory for one kind of pluggable part; `kind` names the setting in error messages."""

    def __init__(self, kind: str, *, lazy: dict[str, str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, F] = {}
        self._lazy: dict[str, str] = dict(lazy or {})

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: register `factory` under `name` (a later registration replaces an earlier one)."""

        def deco(factory: F) -> F:
            self._entries[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        """Every registered name, built-in lazy ones included."""
        return sorted(set(self._entries) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def get(self, name: str) -> F:
        """The factory registered under `name`; ConfigError naming the options when there is none."""
        if name not in self._entries and name in self._lazy:
            importlib.import_module(self._lazy[name])  # the module registers itself on import
        if name not in self._entries:
            raise ConfigError(f"{self.kind}: unknown name {name!r}; registered: {', '.join(self.names())}")
        return self._entries[name]

"""Name -> class registries for methods, heads, balancers, datasets and encoders.

One class serves every kind (timm's ``@register_model`` / lm-eval's ``Registry``): registration by
decorator, an error on duplicate keys, near-name suggestions on unknown keys, and lazy
``"module:attr"`` entries so heavy optional parts are imported only when used.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of classes (or factories) with helpful lookup errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("late_fusion")``. Duplicate names raise ``ValueError``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T | str) -> None:
        """Register ``obj`` (or a lazy ``"module:attr"`` string) under ``name``."""
        if name in self._entries:
            existing = self._entries[name]
            if existing is obj:
                return
            raise ValueError(f"duplicate {self.kind} name {name!r}: already registered to {existing!r}")
        self._entries[name] = obj
        if not isinstance(obj, str):
            try:
                obj.registry_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass

    def get(self, name: str) -> T:
        """Look a name up; unknown names raise ``ConfigError`` with close matches."""
        ensure_builtins_loaded()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries))
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {known})")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        """Sorted registered names."""
        ensure_builtins_loaded()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        ensure_builtins_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, Any]]:
        """(name, class) pairs, importing lazy entries."""
        return [(n, self.get(n)) for n in self.names()]


METHODS: Registry[Any] = Registry("method")
HEADS: Registry[Any] = Registry("head")
BALANCERS: Registry[Any] = Registry("balancer")
DATASETS: Registry[Any] = Registry("dataset adapter")
ENCODERS: Registry[Any] = Registry("encoder")

_BUILTIN_PACKAGES = ("mmbench.models", "mmbench.heads", "mmbench.balancers", "mmbench.data", "mmbench.encoders")
_loaded = False


def ensure_builtins_loaded() -> None:
    """Import the built-in packages once so their decorators run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg in _BUILTIN_PACKAGES:
        importlib.import_module(pkg)


def register_method(name: str) -> Callable[[T], T]:
    """Register a method class under ``name`` (the key in ``methods/<name>.yaml``)."""
    return METHODS.register(name)


def register_head(name: str) -> Callable[[T], T]:
    """Register an output head class."""
    return HEADS.register(name)


def register_balancer(name: str) -> Callable[[T], T]:
    """Register a training balancer class."""
    return BALANCERS.register(name)


def register_dataset(name: str) -> Callable[[T], T]:
    """Register a dataset adapter class (the ``adapter:`` key of a dataset card)."""
    return DATASETS.register(name)


def register_encoder(name: str) -> Callable[[T], T]:
    """Register an encoder factory/class."""
    return ENCODERS.register(name)

"""Name -> class registries for methods, heads, balancers, datasets and encoders.

One class serves every kind (timm's ``@register_model`` / lm-eval's ``Registry``): registration by
decorator, an error on duplicate keys, near-name suggestions on unknown keys, and lazy
``"module:attr"`` entries so that heavy modules (torch, timm) are imported only when a name is used.

The built-in packages register their names lazily together with their *config class* (a light,
torch-free pydantic dataclass), so commands that only validate or list configs never import torch:
``REGISTRY.config(name)`` answers without importing the implementation, ``REGISTRY.get(name)``
imports it. Implementations declare a ``version`` (hashed into every run id; bump it when the
behaviour changes) that ``REGISTRY.version(name)`` reads.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


@dataclass
class _Entry:
    target: Any  # the class, or a lazy "module:attr" string
    config: type | None = None


class Registry(Generic[T]):
    """A named collection of classes (or factories) with helpful lookup errors."""

    def __init__(self, kind: str, config_attr: str = "Config") -> None:
        self.kind = kind
        self.config_attr = config_attr
        self._entries: dict[str, _Entry] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("late_fusion")``. Duplicate names raise ``ValueError``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T | str, config: type | None = None) -> None:
        """Register ``obj`` (or a lazy ``"module:attr"`` string) under ``name``.

        Registering the class a lazy entry of the same name points to replaces the string (the
        decorator in the implementation module confirms the built-in's lazy entry).
        """
        existing = self._entries.get(name)
        if existing is not None:
            if existing.target is obj:
                return
            if isinstance(existing.target, str) and not isinstance(obj, str) and existing.target == _path(obj):
                existing.target = obj
                _tag(obj, name)
                return
            raise ValueError(f"duplicate {self.kind} name {name!r}: already registered to {existing.target!r}")
        self._entries[name] = _Entry(obj, config)
        if not isinstance(obj, str):
            _tag(obj, name)

    def lazy(self, name: str, target: str, config: type | None = None) -> None:
        """Register ``"module:attr"`` under ``name`` with its (light) config class."""
        self.add(name, target, config)

    def _entry(self, name: str) -> _Entry:
        ensure_builtins_loaded()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries))
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {known})")
        return self._entries[name]

    def get(self, name: str) -> T:
        """The implementation of ``name`` (imported on first use); unknown names raise ``ConfigError``."""
        entry = self._entry(name)
        if isinstance(entry.target, str):
            module, _, attr = entry.target.partition(":")
            entry.target = getattr(importlib.import_module(module), attr)
        return entry.target  # type: ignore[return-value]

    def config(self, name: str) -> type:
        """The config class of ``name`` without importing a lazy implementation."""
        entry = self._entry(name)
        if entry.config is None:
            entry.config = getattr(self.get(name), self.config_attr)
        return entry.config

    def version(self, name: str) -> int:
        """The implementation's behaviour version (``version`` class attribute, default 1)."""
        return int(getattr(self.get(name), "version", 1))

    def is_loaded(self, name: str) -> bool:
        """Whether ``name``'s implementation module has been imported."""
        return not isinstance(self._entry(name).target, str)

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


def _path(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


def _tag(obj: Any, name: str) -> None:
    try:
        obj.registry_name = name  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass


METHODS: Registry[Any] = Registry("method")
HEADS: Registry[Any] = Registry("head")
BALANCERS: Registry[Any] = Registry("balancer")
DATASETS: Registry[Any] = Registry("dataset adapter", config_attr="Options")
ENCODERS: Registry[Any] = Registry("encoder")

_BUILTIN_PACKAGES = ("mmbench.models", "mmbench.heads", "mmbench.balancers", "mmbench.data", "mmbench.encoders")
_loaded = False


def ensure_builtins_loaded() -> None:
    """Import the built-in packages once so their (lazy) registrations run; this imports no torch."""
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

"""Output heads, registered by name (``native``, ``linear``, ``dpl``)."""

from importlib import import_module

from .base import Head

for _name in ["native", "linear", "dpl"]:
    try:
        import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{_name}":
            raise

__all__ = ["Head"]

"""Training balancers, registered by name (``none``, ``mce``)."""

from importlib import import_module

from .base import Balancer

for _name in ["none", "mce"]:
    try:
        import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{_name}":
            raise

__all__ = ["Balancer"]

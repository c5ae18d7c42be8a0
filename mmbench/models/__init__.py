"""Methods, one file each, registered by name. Importing this package registers them all."""

from importlib import import_module

from .base import BuildContext, Method, NoConfig, Stage

_METHOD_MODULES = ["late_fusion", "drfuse", "shaspec", "ifmmin", "dmrnet", "dfpl"]
for _name in _METHOD_MODULES:
    try:
        import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as exc:  # a method file not written yet
        if exc.name != f"{__name__}.{_name}":
            raise

__all__ = ["BuildContext", "Method", "NoConfig", "Stage"]

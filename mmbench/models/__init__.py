"""Methods, one file each, registered by name. Importing this package registers them all."""

from . import dfpl, dmrnet, drfuse, ifmmin, late_fusion, shaspec  # noqa: F401,E402  (registration)
from .base import BuildContext, Method, NoConfig, Stage

__all__ = ["BuildContext", "Method", "NoConfig", "Stage"]

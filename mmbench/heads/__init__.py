"""Output heads, registered by name (``native``, ``linear``, ``dpl``)."""

from . import dpl, linear, native  # noqa: F401,E402  (registration)
from .base import Head

__all__ = ["Head"]

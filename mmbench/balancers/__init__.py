"""Training balancers, registered by name (``none``, ``mce``)."""

from . import mce, none  # noqa: F401,E402  (registration)
from .base import Balancer

__all__ = ["Balancer"]

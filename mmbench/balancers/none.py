"""The ``none`` balancer: plain training."""

from __future__ import annotations

from ..registry import register_balancer
from .base import Balancer


@register_balancer("none")
class NoBalancer(Balancer):
    """Leaves the loss terms as they are."""

    cite = "no balancing"

"""Training balancers, registered by name (``none``, ``mce``), lazily with their configs."""

from ..models.params import NoConfig
from ..registry import BALANCERS
from .params import MCEConfig

BALANCERS.lazy("none", "mmbench.balancers.none:NoBalancer", NoConfig)
BALANCERS.lazy("mce", "mmbench.balancers.mce:MCEBalancer", MCEConfig)

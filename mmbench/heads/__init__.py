"""Output heads, registered by name (``native``, ``linear``, ``dpl``), lazily with their configs."""

from ..models.params import NoConfig
from ..registry import HEADS
from .params import DPLConfig

HEADS.lazy("native", "mmbench.heads.native:NativeHead", NoConfig)
HEADS.lazy("linear", "mmbench.heads.linear:LinearHead", NoConfig)
HEADS.lazy("dpl", "mmbench.heads.dpl:DPLHead", DPLConfig)

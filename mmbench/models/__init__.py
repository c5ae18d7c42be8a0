"""Methods, one file each, registered by name.

The built-ins are registered lazily with their torch-free config (:mod:`mmbench.models.params`):
naming a method in a YAML or listing methods imports nothing heavy; building one imports its
module, whose ``@register_method`` decorator confirms the entry. A method of your own registers with
the decorator alone (``docs/adding.md``).
"""

from ..registry import METHODS
from . import params as _p

METHODS.lazy("late_fusion", "mmbench.models.late_fusion:LateFusion", _p.LateFusionConfig)
METHODS.lazy("drfuse", "mmbench.models.drfuse:DrFuse", _p.DrFuseConfig)
METHODS.lazy("shaspec", "mmbench.models.shaspec:ShaSpec", _p.ShaSpecConfig)
METHODS.lazy("ifmmin", "mmbench.models.ifmmin:IFMMIN", _p.IFMMINConfig)
METHODS.lazy("dmrnet", "mmbench.models.dmrnet:DMRNet", _p.DMRNetConfig)
METHODS.lazy("dfpl", "mmbench.models.dfpl:DFPL", _p.DFPLConfig)

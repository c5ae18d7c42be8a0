"""The ``native`` head: keep the method's own classifier and classification loss."""

from __future__ import annotations

from torch import Tensor

from ..data.batch import Batch, Output
from ..registry import register_head
from .base import Head


@register_head("native")
class NativeHead(Head):
    """Identity: logits and ``"task"`` loss are the method's."""

    replaces_task = False
    cite = "the method's own output layer"

    def forward(self, out: Output, batch: Batch) -> Tensor:
        """Return the method's logits unchanged."""
        return out.logits

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        """No extra terms."""
        return {}

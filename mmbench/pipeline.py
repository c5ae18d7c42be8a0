"""Method + head + balancer composed into the module the trainer optimises."""

from __future__ import annotations

from torch import Tensor, nn

from .balancers.base import Balancer
from .data.batch import Batch, Output
from .heads.base import Head
from .models.base import Method


class Pipeline(nn.Module):
    """``forward`` runs the method then the head; ``loss_terms`` gathers method, head, balancer terms."""

    def __init__(self, method: Method, head: Head, balancer: Balancer) -> None:
        super().__init__()
        self.method = method
        self.head = head
        self.balancer = balancer

    def forward(self, batch: Batch) -> Output:
        """Method forward, then the head's logits (the method's own kept as ``aux["native_logits"]``)."""
        out = self.method(batch)
        if self.head.replaces_task:
            out.aux["native_logits"] = out.logits
            out.logits = self.head(out, batch)
        return out

    def loss_terms(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        """All weighted terms of one training step; the objective is their sum."""
        terms = dict(self.method.losses(batch, out))
        if self.head.replaces_task:
            terms.pop("task", None)
            terms.update(self.head.losses(batch, out))
        return self.balancer.losses(self, batch, out, terms)

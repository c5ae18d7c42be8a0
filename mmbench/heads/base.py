"""Output heads: map a method's per-modality embeddings (+ presence) to logits, with own loss terms.

A head other than ``native`` replaces the method's classifier: the pipeline sets ``out.logits`` to
the head's evaluation logits (the method's own are kept in ``out.aux["native_logits"]``) and swaps the
method's ``"task"`` loss for the head's terms. Method auxiliaries (disentanglement, alignment, ...) stay.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from ..data.batch import Batch, Output
from ..losses import task_loss_per_sample
from ..models.base import BuildContext, NoConfig


class Head(nn.Module):
    """Base class of registered heads."""

    Config: type = NoConfig
    #: behaviour version, hashed into every run id: bump it when a change alters what it computes
    version: ClassVar[int] = 1
    #: True if the head's losses replace the method's ``"task"`` term
    replaces_task: bool = True
    cite: str = ""

    def __init__(self, ctx: BuildContext, embed_dims: dict[str, int], cfg: object) -> None:
        super().__init__()
        self.ctx = ctx
        self.embed_dims = embed_dims
        self.cfg = cfg
        self.task = ctx.info.task

    def forward(self, out: Output, batch: Batch) -> Tensor:  # pragma: no cover - interface
        """Evaluation logits ``B x C`` from ``out.embeddings`` and ``batch.present``."""
        raise NotImplementedError

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:  # pragma: no cover - interface
        """Named, weighted loss terms (``out.logits`` already holds this head's logits)."""
        raise NotImplementedError

    def per_sample_task_loss(self, batch: Batch, out: Output) -> Tensor:
        """The head's classification loss per row (balancers such as MCE use it on subset forwards)."""
        return task_loss_per_sample(out.logits, batch.y, self.task)

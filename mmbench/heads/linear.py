"""The ``linear`` head: one linear layer on the concatenated per-modality embeddings (absent = 0)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.batch import MODALITIES, Batch, Output
from ..losses import task_loss
from ..models.base import BuildContext, NoConfig
from ..registry import register_head
from .base import Head


@register_head("linear")
class LinearHead(Head):
    """Concat of pooled embeddings (zeroed where absent) -> Linear; softmax CE / BCE."""

    cite = "linear classifier on concatenated modality embeddings"

    def __init__(self, ctx: BuildContext, embed_dims: dict[str, int], cfg: NoConfig) -> None:
        super().__init__(ctx, embed_dims, cfg)
        self.fc = nn.Linear(sum(embed_dims[m] for m in MODALITIES), ctx.info.num_classes)

    def forward(self, out: Output, batch: Batch) -> Tensor:
        """Logits from the zero-filled concatenation."""
        parts = [out.embeddings[m] * batch.present[:, j : j + 1].to(out.embeddings[m].dtype)
                 for j, m in enumerate(MODALITIES)]
        return self.fc(torch.cat(parts, dim=1))

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        """Classification loss on the head's logits."""
        return {"task": task_loss(out.logits, batch.y, self.task)}

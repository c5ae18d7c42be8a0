"""Late fusion: concatenate pooled per-modality embeddings (zeros where absent) -> linear classifier.

The lower bound every missing-modality method must beat.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.batch import MODALITIES, Batch, Output
from ..encoders.build import build_encoder
from ..losses import task_loss
from ..registry import register_method
from .base import BuildContext, Method
from .params import LateFusionConfig


@register_method("late_fusion")
class LateFusion(Method):
    """Encoders per modality, pooled embeddings zeroed where absent, concatenated, one linear layer."""

    Config = LateFusionConfig
    cite = "Baseline: late fusion of pooled unimodal embeddings (concat + linear)"

    def __init__(self, ctx: BuildContext, cfg: LateFusionConfig) -> None:
        super().__init__(ctx, cfg)
        self.encoders = nn.ModuleDict({m: build_encoder(m, ctx.info, ctx.encoders, ctx.hidden)
                                       for m in MODALITIES})
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(ctx.hidden * len(MODALITIES), ctx.info.num_classes)

    def forward(self, batch: Batch) -> Output:
        """Encode each modality, zero absent embeddings, classify the concatenation."""
        emb = {}
        for j, m in enumerate(MODALITIES):
            _, pooled = self.encoders[m](batch.inputs[m])
            emb[m] = pooled * batch.present[:, j : j + 1].to(pooled.dtype)
        fused = torch.cat([emb[m] for m in MODALITIES], dim=1)
        return Output(logits=self.classifier(self.dropout(fused)), embeddings=emb)

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        """Only the classification loss."""
        return {"task": task_loss(out.logits, batch.y, self.task)}

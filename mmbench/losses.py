"""Loss helpers shared by methods, heads and balancers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mean(values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``values`` over the rows where ``mask`` is True; exactly 0 (with grad) when none are.

    Every masked loss term in mmbench divides by the count of rows it covers, so a batch without any
    row of a pattern contributes zero instead of NaN.
    """
    if mask is None:
        return values.mean() if values.numel() else values.sum() * 0.0
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(values)
    count = mask.sum()
    return (values * mask).sum() / count.clamp_min(1.0)


def task_loss_per_sample(logits: Tensor, y: Tensor, task: str) -> Tensor:
    """Per-sample classification loss: softmax CE (multiclass/binary), mean BCE over labels (multilabel)."""
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none").mean(dim=1)
    return F.cross_entropy(logits, y.long(), reduction="none")


def task_loss(logits: Tensor, y: Tensor, task: str, mask: Tensor | None = None) -> Tensor:
    """Masked mean of :func:`task_loss_per_sample`."""
    return masked_mean(task_loss_per_sample(logits, y, task), mask)


def probabilities(logits: Tensor, task: str) -> Tensor:
    """Class probabilities from logits (sigmoid for multilabel, softmax otherwise)."""
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=-1)

"""Loss helpers shared by methods, heads and balancers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The floating dtype a loss is computed in: its inputs' (promoted) dtype, but at least float32.

    float32 stays float32 and float64 stays float64 (so ``torch.autograd.gradcheck`` can check a loss
    in double precision); half-precision inputs (autocast) are lifted to float32.
    """
    dtype = torch.float32
    for t in tensors:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


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
    """Per-sample classification loss: softmax CE (multiclass/binary), mean BCE over labels (multilabel),
    in :func:`compute_dtype` of the logits."""
    if task == "multilabel":
        dtype = compute_dtype(logits)
        return F.binary_cross_entropy_with_logits(logits.to(dtype), y.to(dtype), reduction="none").mean(dim=1)
    return F.cross_entropy(logits, y.long(), reduction="none")


def task_loss(logits: Tensor, y: Tensor, task: str, mask: Tensor | None = None) -> Tensor:
    """Masked mean of :func:`task_loss_per_sample`."""
    return masked_mean(task_loss_per_sample(logits, y, task), mask)


def probabilities(logits: Tensor, task: str) -> Tensor:
    """Class probabilities from logits (sigmoid for multilabel, softmax otherwise)."""
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=-1)

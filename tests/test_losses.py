"""Shared loss helpers: the dtype a loss is computed in, and gradients of the task loss in float64."""

from __future__ import annotations

import pytest
import torch

from mmbench.losses import compute_dtype, task_loss_per_sample


def test_compute_dtype_keeps_float32_and_float64_and_lifts_half() -> None:
    f64, f32 = torch.zeros(1, dtype=torch.float64), torch.zeros(1)
    assert compute_dtype(f32) == torch.float32
    assert compute_dtype(f64) == torch.float64
    assert compute_dtype(f32, f64) == torch.float64
    assert compute_dtype(torch.zeros(1, dtype=torch.bfloat16)) == torch.float32
    assert compute_dtype(torch.zeros(1, dtype=torch.float16), torch.zeros(1, dtype=torch.long)) == torch.float32


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_task_loss_gradcheck_in_float64(task: str) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(4, 3, generator=g) > 0.5).float() if task == "multilabel" else torch.tensor([0, 2, 1, 2])
    assert task_loss_per_sample(logits, y, task).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda z: task_loss_per_sample(z, y, task), (logits,))


def test_multilabel_float32_unchanged() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # mean BCE per row by hand: log(1 + e^-z) for label 1, log(1 + e^z) for label 0
    sp = lambda v: torch.log1p(torch.exp(torch.tensor(v)))  # noqa: E731
    expected = torch.stack([(sp(-2.0) + sp(-1.0)) / 2, (sp(0.0) + sp(-3.0)) / 2])
    out = task_loss_per_sample(logits, y, "multilabel")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    assert task_loss_per_sample(logits.bfloat16(), y, "multilabel").dtype == torch.float32

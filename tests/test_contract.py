"""Contract tests, parametrized over every registered method (a new method is tested automatically).

Forward shapes, named finite loss terms, backward, degenerate batches (one pattern only, no
complete pair, two rows), leakage (garbage in the absent rows of an absent modality changes no
output bit) and determinism.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mmbench.data.batch import MODALITIES, Batch
from mmbench.registry import METHODS
from tests.conftest import MIXED, make_batch, tiny_ctx

METHOD_NAMES = METHODS.names()


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    cls = METHODS.get(name)
    return cls(tiny_ctx(), cls.Config())


def _finite_terms(terms: dict) -> None:
    assert "task" in terms, "the loss dict must name the classification term 'task'"
    for k, v in terms.items():
        assert v.dim() == 0, f"loss term {k!r} must be a scalar"
        assert torch.isfinite(v), f"loss term {k!r} is not finite: {v}"


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_forward_shapes_and_losses(name: str) -> None:
    model = build(name)
    batch = make_batch(MIXED)
    out = model(batch)
    info = model.ctx.info
    assert out.logits.shape == (len(batch), info.num_classes)
    assert torch.isfinite(out.logits).all()
    dims = model.embed_dims()
    for m in MODALITIES:
        assert out.embeddings[m].shape == (len(batch), dims[m]), f"embeddings[{m!r}] shape"
    terms = model.losses(batch, out)
    _finite_terms(terms)
    total = sum(terms.values())
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("patterns", [
    ["complete"] * 4, ["image_only"] * 4, ["tabular_only"] * 4, ["image_only", "tabular_only"],
    ["image_only", "tabular_only", "image_only", "tabular_only"],
], ids=["all-complete", "all-image-only", "all-tabular-only", "two-rows-no-pair", "no-complete-pair"])
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_degenerate_batches_have_no_nan(name: str, patterns: list[str]) -> None:
    model = build(name)
    for stage in model.stages():  # every stage's losses must be safe
        model.begin_stage(stage.name)
        batch = make_batch(patterns)
        if stage.rows is not None:
            keep = stage.rows(batch)
            if int(keep.sum()) == 0:
                continue
            batch = batch.select(keep)
        model.zero_grad()
        out = model(batch)
        assert torch.isfinite(out.logits).all()
        terms = model.losses(batch, out)
        _finite_terms(terms)
        sum(terms.values()).backward()
        for p in model.parameters():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), f"non-finite grad in stage {stage.name}"


def _garbage_in_absent_rows(batch: Batch) -> Batch:
    gen = torch.Generator().manual_seed(123)
    inputs = {}
    for j, m in enumerate(MODALITIES):
        absent = ~batch.present[:, j]
        parts = {}
        for k, t in batch.inputs[m].items():
            noise = (torch.randint(0, 3, t.shape, generator=gen) if not t.is_floating_point()
                     else torch.randn(t.shape, generator=gen) * 5).to(t.dtype)
            shape = (-1,) + (1,) * (t.dim() - 1)
            parts[k] = torch.where(absent.view(shape), noise, t)
        inputs[m] = parts
    return dataclasses.replace(batch, inputs=inputs)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_absent_modality_data_cannot_leak(name: str) -> None:
    """The raw data of an absent modality changes no output bit (evaluation mode)."""
    model = build(name).eval()
    for stage in model.stages():
        model.begin_stage(stage.name)
    batch = make_batch(MIXED)
    with torch.no_grad():
        ref = model(batch)
        alt = model(_garbage_in_absent_rows(batch))
    assert torch.equal(ref.logits, alt.logits)
    for m in MODALITIES:
        assert torch.equal(ref.embeddings[m], alt.embeddings[m]), f"embeddings[{m!r}] changed"


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_deterministic(name: str) -> None:
    batch = make_batch(MIXED)
    outs = []
    for _ in range(2):
        model = build(name, seed=7)
        torch.manual_seed(1)
        out = model(batch)
        terms = model.losses(batch, out)
        outs.append((out.logits.detach(), float(sum(terms.values()).detach())))
    assert torch.equal(outs[0][0], outs[1][0])
    assert math.isclose(outs[0][1], outs[1][1], rel_tol=0, abs_tol=0)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_registered_metadata(name: str) -> None:
    cls = METHODS.get(name)
    assert cls.cite, f"{name} needs a cite line"
    assert dataclasses.is_dataclass(cls.Config)
    assert (cls.__doc__ or "").strip(), f"{name} needs a docstring"

"""Composition: every registered method x every head (``native`` included) x every balancer.

Parametrized over the registries, so a new method, head or balancer is covered automatically. Each
pipeline is built as ``Pipeline(method, head, balancer)``, set up (MCE trains its reference
predictors for one epoch on a few rows), then trained one step on a mixed batch and on batches where
a missing pattern is absent entirely; the absent modality's raw data must not change any output bit.
The head/task rule of :class:`~mmbench.pipeline.Pipeline` is pinned term by term: a replacing head
swaps the method's ``task`` term for its own terms and keeps the method's logits as
``aux["native_logits"]``; ``native`` leaves the method's logits and terms untouched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from mmbench.data.base import Split
from mmbench.data.batch import MODALITIES, Batch
from mmbench.errors import ConfigError
from mmbench.pipeline import Pipeline
from mmbench.registry import BALANCERS, HEADS, METHODS
from tests.conftest import MIXED, make_batch, tiny_ctx, tiny_data

METHOD_NAMES = METHODS.names()
HEAD_NAMES = HEADS.names()
BALANCER_NAMES = BALANCERS.names()
DEGENERATE = [["complete"] * 4, ["image_only"] * 4, ["tabular_only"] * 3, ["image_only", "tabular_only"]]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscribing a shared CPU (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@dataclass
class SetupLoader:
    """A training loader as balancers' ``setup`` sees it (a few rows, every pattern present)."""

    split: Split
    present: Tensor
    indices: Tensor
    batch_size: int = 16
    device: torch.device = torch.device("cpu")

    def __iter__(self):
        for start in range(0, len(self.indices), self.batch_size):
            yield self.split.batch(self.indices[start:start + self.batch_size], self.present)


def setup_loader() -> SetupLoader:
    _, splits = tiny_data()
    train = splits["train"]
    present = torch.ones(len(train), 2, dtype=torch.bool)
    present[0::3, 1] = False  # image-only
    present[1::3, 0] = False  # tabular-only
    return SetupLoader(train, present, torch.arange(16))


def small_config(cls: type) -> object:
    """The registered default config, with any reference-stage epochs cut to one."""
    cfg = cls.Config()
    if dataclasses.is_dataclass(cfg) and "ref_epochs" in {f.name for f in dataclasses.fields(cfg)}:
        cfg = dataclasses.replace(cfg, ref_epochs=1)
    return cfg


def build(method: str, head: str, balancer: str) -> Pipeline:
    torch.manual_seed(0)
    ctx = tiny_ctx()
    mcls = METHODS.get(method)
    model = mcls(ctx, mcls.Config())
    if not model.supports_heads:
        pytest.skip(f"{method} declares supports_heads = False (config validation refuses head {head!r})")
    dims = model.embed_dims()
    hcls = HEADS.get(head)
    try:
        h = hcls(ctx, dims, hcls.Config())
    except ConfigError as exc:  # a head that cannot work with a method says so at config time
        assert str(exc), "the refusal must explain itself"
        pytest.skip(f"{head} refuses {method}: {exc}")
    bcls = BALANCERS.get(balancer)
    pipe = Pipeline(model, h, bcls(ctx, dims, small_config(bcls)))
    pipe.balancer.setup(pipe, {"train": setup_loader()})  # type: ignore[dict-item]
    return pipe


def train_step(pipe: Pipeline, batch: Batch) -> dict[str, Tensor]:
    pipe.train()
    pipe.zero_grad(set_to_none=True)
    out = pipe(batch)
    assert out.logits.shape == (len(batch), pipe.method.ctx.info.num_classes)
    assert torch.isfinite(out.logits).all()
    terms = pipe.loss_terms(batch, out)
    for k, v in terms.items():
        assert v.dim() == 0 and torch.isfinite(v), f"term {k!r} = {v}"
    torch.stack([t.float() for t in terms.values()]).sum().backward()
    for name, p in pipe.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
    return terms


def each_stage(pipe: Pipeline, patterns: list[str]):
    """Yield the batch of ``patterns`` in every training stage of the method (rows filtered)."""
    for stage in pipe.method.stages():
        pipe.method.begin_stage(stage.name)
        batch = make_batch(patterns)
        if stage.rows is not None:
            keep = stage.rows(batch)
            if int(keep.sum()) < 2:
                continue
            batch = batch.select(keep)
        yield stage.name, batch


@pytest.mark.parametrize("balancer", BALANCER_NAMES)
@pytest.mark.parametrize("head", HEAD_NAMES)
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_compose_forward_backward(method: str, head: str, balancer: str) -> None:
    pipe = build(method, head, balancer)
    for _, batch in each_stage(pipe, MIXED):
        terms = train_step(pipe, batch)
        if pipe.head.replaces_task:
            head_terms = pipe.head.losses(batch, pipe(batch))
            assert set(head_terms) <= set(terms), "the head's terms must reach the objective"
        trained = list(pipe.head.parameters()) or list(pipe.method.parameters())  # native: the method's classifier
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
        if balancer == "mce":
            assert {"mce_sub", *(f"mce_sep_{m}" for m in MODALITIES)} <= set(terms)
        if not pipe.head.replaces_task:
            assert "task" in terms, "with the native head the method's own task term is trained"
    for patterns in DEGENERATE:
        for _, batch in each_stage(pipe, patterns):
            train_step(pipe, batch)


def _seeded(fn, *args):
    """``fn(*args)`` with the global RNG reset first (methods sample in training: DMRNet's z, dropout)."""
    torch.manual_seed(11)
    return fn(*args)


@pytest.mark.parametrize("head", HEAD_NAMES)
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_head_replaces_task_term_and_keeps_native_logits(method: str, head: str) -> None:
    """The pipeline's rule, term by term, in every training stage of the method.

    Replacing head: the objective is the method's terms minus ``task`` plus the head's terms; the logits
    are the head's and the method's own are ``aux["native_logits"]``. ``native``: the method alone.
    """
    pipe = build(method, head, "none").train()
    for stage, batch in each_stage(pipe, MIXED):
        alone = _seeded(pipe.method, batch)  # the method by itself on the same random draws
        out = _seeded(pipe, batch)
        terms = _seeded(pipe.loss_terms, batch, out)
        method_terms = _seeded(pipe.method.losses, batch, out)
        assert "task" in method_terms, f"{method} names no 'task' term in stage {stage!r}"
        if pipe.head.replaces_task:
            assert torch.equal(out.aux["native_logits"], alone.logits), "native_logits must be the method's logits"
            assert torch.equal(out.logits, pipe.head(alone, batch)), "the logits must be the head's"
            head_terms = pipe.head.losses(batch, out)
            expected = {k: v for k, v in method_terms.items() if k != "task"} | head_terms
            if "task" not in head_terms:
                assert "task" not in terms, f"the method's task term survived head {head!r} (stage {stage!r})"
        else:
            assert "native_logits" not in out.aux
            assert torch.equal(out.logits, alone.logits)
            expected = method_terms
        assert set(terms) == set(expected), f"stage {stage!r}: {sorted(terms)} != {sorted(expected)}"
        for k, v in expected.items():
            assert torch.allclose(terms[k], v, rtol=1e-6, atol=1e-7), f"term {k!r} in stage {stage!r}"


@pytest.mark.parametrize("head", HEAD_NAMES)
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_composed_outputs_ignore_absent_data(method: str, head: str) -> None:
    pipe = build(method, head, "none").eval()
    batch = make_batch(MIXED)
    gen = torch.Generator().manual_seed(5)
    inputs = {}
    for j, m in enumerate(MODALITIES):
        absent = ~batch.present[:, j]
        inputs[m] = {}
        for k, t in batch.inputs[m].items():
            noise = (torch.randn(t.shape, generator=gen) * 5 if t.is_floating_point()
                     else torch.randint(0, 2, t.shape, generator=gen)).to(t.dtype)
            inputs[m][k] = torch.where(absent.view((-1,) + (1,) * (t.dim() - 1)), noise, t)
    with torch.no_grad():
        ref, alt = pipe(batch), pipe(dataclasses.replace(batch, inputs=inputs))
    assert torch.equal(ref.logits, alt.logits)

"""DrFuse: every loss term against hand-computed values, masking, leakage, degenerate batches."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from mmbench.data.base import DataInfo, TabularSchema
from mmbench.data.batch import Batch
from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions
from mmbench.errors import ConfigError
from mmbench.models.base import BuildContext
from mmbench.models.drfuse import (
    ClassWiseAttention,
    DrFuse,
    DrFuseConfig,
    abs_cosine,
    attention_rank_loss,
    logit_pool,
    per_class_branch_loss,
    sigmoid_jsd,
)
from mmbench.registry import METHODS
from mmbench.typed import validate
from tests.conftest import batch_with_presence

LN3 = math.log(3.0)

# presence rows: complete, image-only, tabular-only, complete, image-only, tabular-only
MIXED = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1], [1, 0], [0, 1]], dtype=torch.bool)


@pytest.fixture(scope="module")
def data():
    info, splits = SyntheticDataset(SyntheticOptions(n_samples=20, image_size=16)).load()
    return info, splits["train"]


def make_batch(split, present: torch.Tensor) -> Batch:
    return batch_with_presence(split, present)


def build(info, **kw) -> DrFuse:
    torch.manual_seed(0)
    return DrFuse(BuildContext(info, hidden=8), DrFuseConfig(**kw))


def test_registered_with_citation():
    cls = METHODS.get("drfuse")
    assert cls is DrFuse and "AAAI 2024" in cls.cite


# ---- logit pooling --------------------------------------------------------------------------------

def test_logit_pool_matches_hand_values_and_identity():
    # dim 0: a=0, b=ln3 -> sigma: 0.5, 0.75, mean 0.625 -> h = ln(0.625/0.375) = ln(5/3)
    #   paper form: log(2e^{a+b} + e^a + e^b) - log(2 + e^a + e^b) = log(6+1+3) - log(2+1+3) = ln(10/6)
    # dim 1: a=ln3, b=-ln3 -> sigma: 0.75, 0.25, mean 0.5 -> h = 0
    a = torch.tensor([[0.0, LN3]])
    b = torch.tensor([[LN3, -LN3]])
    h = logit_pool(torch.stack([a, b], dim=1), torch.tensor([[True, True]]))
    assert torch.allclose(h, torch.tensor([[math.log(5 / 3), 0.0]]), atol=1e-6)
    # sigma(h) = 1/2 (sigma(a) + sigma(b)) on random values, including large ones
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g) * 6, torch.randn(5, 7, generator=g) * 6
    h = logit_pool(torch.stack([a, b], dim=1), torch.ones(5, 2, dtype=torch.bool))
    assert torch.allclose(torch.sigmoid(h), 0.5 * (torch.sigmoid(a) + torch.sigmoid(b)), atol=1e-6)
    paper = torch.log(2 * torch.exp(a + b) + torch.exp(a) + torch.exp(b)) - torch.log(2 + a.exp() + b.exp())
    ok = (a.abs() < 10) & (b.abs() < 10)  # the literal form overflows beyond that
    assert torch.allclose(h[ok], paper[ok], atol=1e-5)


def test_logit_pool_single_and_none_present():
    a = torch.tensor([[1.5, -2.0], [0.3, 0.4], [9.0, 9.0]])
    b = torch.tensor([[7.0, 7.0], [-0.25, 2.0], [9.0, 9.0]])
    present = torch.tensor([[True, False], [False, True], [False, False]])
    h = logit_pool(torch.stack([a, b], dim=1), present)
    assert torch.equal(h[0], a[0])  # only the image shared feature: passes through exactly
    assert torch.equal(h[1], b[1])
    assert torch.equal(h[2], torch.zeros(2))


# ---- JSD and |cos| --------------------------------------------------------------------------------

def test_sigmoid_jsd_hand_value():
    # P = sigma(0) = 0.5, Q = sigma(ln3) = 0.75, M = 0.625:
    # 1/2 [0.5 ln(0.5/0.625) + 0.75 ln(0.75/0.625)] = 1/2 [0.5 * -0.2231436 + 0.75 * 0.1823216]
    #                                                = 1/2 [-0.1115718 + 0.1367412] = 0.0125847
    # second dimension: a = b -> 0
    a = torch.tensor([[0.0, 2.0]])
    b = torch.tensor([[LN3, 2.0]])
    assert torch.allclose(sigmoid_jsd(a, b), torch.tensor([0.0125847]), atol=1e-6)
    assert torch.allclose(sigmoid_jsd(b, a), sigmoid_jsd(a, b))  # symmetric


def test_abs_cosine_hand_value():
    # [1,0].[-1,1] = -1, norms 1 and sqrt2 -> |cos| = 1/sqrt2; [3,4].[4,-3] = 0
    x = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    y = torch.tensor([[-1.0, 1.0], [4.0, -3.0], [1.0, 1.0]])
    assert torch.allclose(abs_cosine(x, y), torch.tensor([1 / math.sqrt(2), 0.0, 0.0]), atol=1e-7)


# ---- attention and ranking ------------------------------------------------------------------------

def test_class_wise_attention_hand_value_and_mask():
    att = ClassWiseAttention(dim=1, num_classes=1)
    with torch.no_grad():  # q = v = k = x, readout w = 1, b = 0
        att.proj.weight.fill_(1.0)
        att.proj.bias.zero_()
        att.out.weight.fill_(1.0)
        att.out.bias.zero_()
    tokens = torch.tensor([[[1.0], [2.0], [3.0]], [[1.0], [2.0], [3.0]]])
    available = torch.tensor([[True, True, True], [True, True, False]])
    logits, alpha = att(tokens, available)
    # row 0: q = mean(1,2,3) = 2, scores 2*x = [2,4,6], softmax = [0.0158762, 0.1173104, 0.8668133],
    #        z = 0.0158762*1 + 0.1173104*2 + 0.8668133*3 = 2.8509371
    # row 1: q = mean(1,2) = 1.5, scores [1.5, 3, -inf], softmax = [0.1824255, 0.8175745, 0],
    #        z = 0.1824255 + 2*0.8175745 = 1.8175745
    assert torch.allclose(alpha[0, 0], torch.tensor([0.0158762, 0.1173104, 0.8668133]), atol=1e-6)
    assert torch.allclose(alpha[1, 0], torch.tensor([0.1824255, 0.8175745, 0.0]), atol=1e-6)
    assert alpha[1, 0, 2].item() == 0.0
    assert torch.allclose(logits[:, 0], torch.tensor([2.8509371, 1.8175745]), atol=1e-6)


def test_attention_rank_loss_hand_value():
    # tokens (image, shared, tabular); branch losses image 0.1, shared 0.2, tabular 0.4
    # row 0 class 0: alpha = (0.2, 0.3, 0.5)
    #   (image, tabular): 0.1 < 0.4 -> t=+1, max(0, -(0.2-0.5)) = 0.3
    #   (shared, tabular): 0.2 < 0.4 -> t=+1, max(0, -(0.3-0.5)) = 0.2
    #   (shared, image): 0.2 < 0.1 false -> t=-1, max(0, +(0.3-0.2)) = 0.1
    # row 0 class 1: alpha = (0.5, 0.3, 0.2): every pair ranked correctly -> 0 (not counted)
    # row 1 is not complete (masked out) although it violates every pair
    # each pair: sum / (#positive entries = 1); loss = (0.3 + 0.2 + 0.1) / 3 = 0.2
    attn = torch.tensor([[[0.2, 0.3, 0.5], [0.5, 0.3, 0.2]],
                         [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    losses = torch.tensor([0.1, 0.2, 0.4]).expand(2, 2, 3)
    loss = attention_rank_loss(attn, losses, torch.tensor([True, False]))
    assert loss.item() == pytest.approx(0.2, abs=1e-7)
    assert attention_rank_loss(attn, losses, torch.tensor([False, False])).item() == 0.0


def test_ranking_targets_per_class():
    # logits (0, 0, ln2) -> softmax (0.25, 0.25, 0.5), label 2
    # ovr: class 0,1: -ln(1 - 0.25) = 0.2876821; class 2: -ln 0.5 = 0.6931472
    # ce: -ln 0.5 for every class
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)]])
    y = torch.tensor([2])
    ovr = per_class_branch_loss(logits, y, "multiclass", "ovr")
    assert torch.allclose(ovr, torch.tensor([[0.2876821, 0.2876821, 0.6931472]]), atol=1e-6)
    ce = per_class_branch_loss(logits, y, "multiclass", "ce")
    assert torch.allclose(ce, torch.full((1, 3), 0.6931472), atol=1e-6)
    # multilabel: per-label BCE of sigmoid; logit 0 -> ln 2 whatever the label; logit ln3, y=1 -> ln(4/3)
    ml = per_class_branch_loss(torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 1.0]]), "multilabel", "ovr")
    assert torch.allclose(ml, torch.tensor([[math.log(2), math.log(4 / 3)]]), atol=1e-6)


# ---- the method -----------------------------------------------------------------------------------

def test_forward_shapes_and_loss_terms(data):
    info, split = data
    model = build(info)
    batch = make_batch(split, MIXED)
    out = model(batch)
    assert out.logits.shape == (6, 8)
    assert out.aux["attention"].shape == (6, 8, 3)
    for m, j in (("image", 0), ("tabular", 1)):
        assert out.embeddings[m].shape == (6, 8)
        assert torch.all(out.embeddings[m][~MIXED[:, j]] == 0)
    terms = model.losses(batch, out)
    assert set(terms) == {"task", "pred_shared", "pred_image", "pred_tabular", "jsd", "cos_image",
                          "cos_tabular", "rank"}
    sum(terms.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # the absent distinct token receives no attention
    assert torch.all(out.aux["attention"][~MIXED[:, 0]][..., 0] == 0)
    assert torch.all(out.aux["attention"][~MIXED[:, 1]][..., 2] == 0)


def test_loss_terms_are_weighted_and_masked(data):
    info, split = data
    batch = make_batch(split, MIXED)
    model = build(info)
    model.eval()
    out = model(batch)
    terms = model.losses(batch, out)
    y = batch.y
    img, tab = MIXED[:, 0], MIXED[:, 1]

    def ce(logits, rows):  # -log softmax(logits)_y averaged over rows
        nll = -torch.log_softmax(logits, dim=-1).gather(1, y[:, None])[:, 0]
        return nll[rows].mean()

    assert terms["task"].item() == pytest.approx(ce(out.logits, img | tab).item(), rel=1e-5)
    assert terms["pred_image"].item() == pytest.approx(
        0.5 * ce(out.aux["logits_image"], img).item(), rel=1e-5)
    assert terms["pred_tabular"].item() == pytest.approx(
        0.5 * ce(out.aux["logits_tabular"], tab).item(), rel=1e-5)
    jsd = sigmoid_jsd(out.aux["shared_image"], out.aux["shared_tabular"])[img & tab].mean()
    assert terms["jsd"].item() == pytest.approx(jsd.item(), rel=1e-5)
    cos_i = abs_cosine(out.aux["shared_image"], out.aux["distinct_image"])[img].mean()
    assert terms["cos_image"].item() == pytest.approx(cos_i.item(), rel=1e-5)
    # doubling a weight doubles its term and nothing else
    model2 = build(info, lambda_jsd=2.0, lambda_rank=1.0)
    model2.eval()
    terms2 = model2.losses(batch, model2(batch))
    assert terms2["jsd"].item() == pytest.approx(2 * terms["jsd"].item(), rel=1e-5)
    assert terms2["rank"].item() == pytest.approx(2 * terms["rank"].item(), rel=1e-5, abs=1e-9)
    assert terms2["task"].item() == pytest.approx(terms["task"].item(), rel=1e-6)


def test_official_jsd_rows_option(data):
    info, split = data
    batch = make_batch(split, MIXED)
    model = build(info, jsd_rows="all")
    model.eval()
    out = model(batch)
    raw = sigmoid_jsd(out.aux["shared_image_raw"], out.aux["shared_tabular_raw"])
    expected = raw.sum() / 2  # numerator over every row, denominator = 2 complete rows
    assert model.losses(batch, out)["jsd"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_official_jsd_rows_without_a_paired_row_is_clamped(data):
    # no complete row: the official code divides its (non-zero, unmasked) numerator by 1e-6, a
    # 10^6-fold spike; mmbench divides by max(1, 0) = 1, so the term equals the plain numerator
    info, split = data
    batch = make_batch(split, torch.tensor([[1, 0], [0, 1], [1, 0]], dtype=torch.bool))
    model = build(info, jsd_rows="all")
    model.eval()
    out = model(batch)
    numerator = sigmoid_jsd(out.aux["shared_image_raw"], out.aux["shared_tabular_raw"]).sum()
    assert numerator.item() > 0
    assert model.losses(batch, out)["jsd"].item() == pytest.approx(numerator.item(), rel=1e-5)


@pytest.mark.parametrize("rows", [
    [[1, 1]] * 4, [[1, 0]] * 4, [[0, 1]] * 4, [[1, 0], [0, 1], [1, 0], [0, 1]], [[1, 1]],
    [[0, 0], [1, 1], [0, 1]],
])
def test_degenerate_batches_no_nan(data, rows):
    info, split = data
    present = torch.tensor(rows, dtype=torch.bool)
    model = build(info)
    batch = make_batch(split, present)
    out = model(batch)
    terms = model.losses(batch, out)
    total = sum(terms.values())
    assert torch.isfinite(out.logits).all() and torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if not present.all(dim=1).any():
        assert terms["jsd"].item() == 0.0 and terms["rank"].item() == 0.0


def test_absent_garbage_never_reaches_outputs(data):
    """Even non-zero data in absent rows (bypassing the zero fill) changes no output bit."""
    info, split = data
    model = build(info)
    model.eval()
    batch = make_batch(split, MIXED)
    noisy = {m: {k: v.clone() for k, v in d.items()} for m, d in batch.inputs.items()}
    noisy["image"]["pixels"][~MIXED[:, 0]] = torch.randn_like(noisy["image"]["pixels"][~MIXED[:, 0]]) * 5
    noisy["tabular"]["num"][~MIXED[:, 1]] = 7.0
    noisy["tabular"]["cat"][~MIXED[:, 1]] = 1
    garbage = replace(batch, inputs=noisy)
    with torch.no_grad():
        a, b = model(batch), model(garbage)
    assert torch.equal(a.logits, b.logits)
    for m in ("image", "tabular"):
        assert torch.equal(a.embeddings[m], b.embeddings[m])
    assert torch.equal(a.aux["attention"], b.aux["attention"])


def test_multilabel_task(data):
    _, split = data
    info = DataInfo(name="ml", task="multilabel", num_classes=3, image_shape=(3, 16, 16),
                    tabular=TabularSchema(cat_cardinalities=(5, 4), n_num=5))
    model = build(info)
    batch = make_batch(split, MIXED)
    batch = replace(batch, y=torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1],
                                           [0, 1, 0]], dtype=torch.float32))
    out = model(batch)
    terms = model.losses(batch, out)
    assert out.logits.shape == (6, 3) and torch.isfinite(sum(terms.values()))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch.y)
    assert terms["task"].item() == pytest.approx(bce.item(), rel=1e-5)


def test_bad_config_values():
    with pytest.raises(ConfigError, match="lambda_jsd: must be >= 0, got -1.0"):
        validate(DrFuseConfig, {"lambda_jsd": -1.0}, "drfuse")
    with pytest.raises(ConfigError, match="rank_target: expected 'ovr' or 'ce'"):
        validate(DrFuseConfig, {"rank_target": "bce"}, "drfuse")

"""ShaSpec: DAO / DCO against hand-computed values, residual fusion, substitution, masking, leakage."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from mmbench.data.batch import Batch
from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions
from mmbench.errors import ConfigError
from mmbench.models.base import BuildContext
from mmbench.models.shaspec import ShaSpec, ShaSpecConfig, dao_loss, dco_loss, substitute_missing
from mmbench.registry import METHODS
from mmbench.typed import validate
from tests.conftest import batch_with_presence

# presence rows: complete, image-only, tabular-only, complete, image-only, tabular-only
MIXED = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1], [1, 0], [0, 1]], dtype=torch.bool)


@pytest.fixture(scope="module")
def data():
    info, splits = SyntheticDataset(SyntheticOptions(n_samples=20, image_size=16)).load()
    return info, splits["train"]


def make_batch(split, present: torch.Tensor) -> Batch:
    return batch_with_presence(split, present)


def build(info, **kw) -> ShaSpec:
    torch.manual_seed(0)
    return ShaSpec(BuildContext(info, hidden=8), ShaSpecConfig(**kw))


def test_registered_with_citation():
    cls = METHODS.get("shaspec")
    assert cls is ShaSpec and "CVPR 2023" in cls.cite


def test_dao_hand_values():
    # row 0: |1-0| + |2-4| = 3 over 2 dims -> 1.5 (l1); (1 + 4) / 2 = 2.5 (mse)
    # row 1: |0-5| + |0-5| = 10 over 2 dims -> 5.0 (l1); (25 + 25) / 2 = 25 (mse)
    r_a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    r_b = torch.tensor([[0.0, 4.0], [5.0, 5.0]])
    assert dao_loss(r_a, r_b, "l1", torch.tensor([True, False])).item() == pytest.approx(1.5)
    assert dao_loss(r_a, r_b, "mse", torch.tensor([True, False])).item() == pytest.approx(2.5)
    assert dao_loss(r_a, r_b, "l1", None).item() == pytest.approx((1.5 + 5.0) / 2)
    assert dao_loss(r_a, r_b, "l1", torch.tensor([False, False])).item() == 0.0


def test_dco_hand_values():
    # modality 0 logits (2, 0), label 0: CE = ln(1 + e^-2) = 0.1269280
    # modality 1 logits (0, 1), label 1: CE = ln(1 + e^-1) = 0.3132617
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    both = dco_loss(logits, torch.tensor([[True, True]])).item()
    assert both == pytest.approx((math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2, abs=1e-6)
    assert both == pytest.approx((0.1269280 + 0.3132617) / 2, abs=1e-6)
    assert dco_loss(logits, torch.tensor([[True, False]])).item() == pytest.approx(0.1269280, abs=1e-6)
    assert dco_loss(logits, torch.tensor([[False, False]])).item() == 0.0
    assert dco_loss(logits, None).item() == pytest.approx(both)


def test_substitution_of_absent_modality():
    fused = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]], [[5.0], [6.0]], [[7.0], [8.0]]])
    shared = torch.tensor([[[10.0], [20.0]], [[30.0], [40.0]], [[50.0], [60.0]], [[70.0], [80.0]]])
    present = torch.tensor([[True, True], [True, False], [False, True], [False, False]])
    out = substitute_missing(fused, shared, present)
    # complete: fused kept; image-only: tabular slot <- r_image = 30; tabular-only: image slot <- r_tab = 60
    expected = torch.tensor([[[1.0], [2.0]], [[3.0], [30.0]], [[60.0], [6.0]], [[0.0], [0.0]]])
    assert torch.equal(out, expected)


def test_residual_fusion_and_substitution_in_forward(data):
    info, split = data
    model = build(info)
    model.eval()
    with torch.no_grad():  # proj([r; s]) = 2 r + 3 s + 1  ->  f = r + 2 r + 3 s + 1 = 3 r + 3 s + 1
        d = 8
        model.proj.weight.zero_()
        model.proj.weight[:, :d] = 2 * torch.eye(d)
        model.proj.weight[:, d:] = 3 * torch.eye(d)
        model.proj.bias.fill_(1.0)
    batch = make_batch(split, MIXED)
    with torch.no_grad():
        out = model(batch)
    r, s = out.aux["shared"], out.aux["specific"]
    for j, m in enumerate(("image", "tabular")):
        rows = MIXED[:, j]
        assert torch.allclose(out.embeddings[m][rows], 3 * r[rows, j] + 3 * s[rows, j] + 1, atol=1e-5)
        assert torch.all(out.embeddings[m][~rows] == 0)
        assert torch.all(r[~rows, j] == 0) and torch.all(s[~rows, j] == 0)
    # classifier input: image-only rows use r_image in the tabular slot, and vice versa
    feats = torch.stack([out.embeddings["image"], out.embeddings["tabular"]], dim=1)
    feats[1, 1], feats[4, 1] = r[1, 0], r[4, 0]
    feats[2, 0], feats[5, 0] = r[2, 1], r[5, 1]
    expected = feats.flatten(1) @ model.classifier.weight.T + model.classifier.bias
    assert torch.allclose(out.logits, expected, atol=1e-5)


def test_loss_terms_weighted_and_masked(data):
    info, split = data
    model = build(info)
    model.eval()
    batch = make_batch(split, MIXED)
    out = model(batch)
    terms = model.losses(batch, out)
    assert set(terms) == {"task", "dao", "dco"}
    r = out.aux["shared"]
    complete = MIXED.all(dim=1)
    dao = (r[complete, 0] - r[complete, 1]).abs().mean(dim=1).mean()
    assert terms["dao"].item() == pytest.approx(0.1 * dao.item(), rel=1e-5)
    logp = torch.log_softmax(out.aux["domain_logits"], dim=-1)  # B x M x M
    nll = -torch.stack([logp[:, 0, 0], logp[:, 1, 1]], dim=1)
    assert terms["dco"].item() == pytest.approx(0.02 * nll[MIXED].mean().item(), rel=1e-5)
    nll_task = -torch.log_softmax(out.logits, dim=-1).gather(1, batch.y[:, None]).mean()
    assert terms["task"].item() == pytest.approx(nll_task.item(), rel=1e-5)


def test_official_aux_on_absent_option(data):
    info, split = data
    model = build(info, aux_on_absent=True, dao="mse")
    model.eval()
    batch = make_batch(split, MIXED)
    out = model(batch)
    terms = model.losses(batch, out)
    r = out.aux["shared_raw"]
    assert terms["dao"].item() == pytest.approx(0.1 * (r[:, 0] - r[:, 1]).pow(2).mean().item(), rel=1e-5)
    logp = torch.log_softmax(out.aux["domain_logits"], dim=-1)
    nll = -torch.stack([logp[:, 0, 0], logp[:, 1, 1]], dim=1)
    assert terms["dco"].item() == pytest.approx(0.02 * nll.mean().item(), rel=1e-5)


@pytest.mark.parametrize("share_stem", [False, True])
def test_forward_backward_shapes(data, share_stem):
    info, split = data
    model = build(info, share_stem=share_stem)
    batch = make_batch(split, MIXED)
    out = model(batch)
    assert out.logits.shape == (6, 8)
    assert all(out.embeddings[m].shape == (6, 8) for m in ("image", "tabular"))
    sum(model.losses(batch, out).values()).backward()
    grads = [p.grad for p in model.shared_trunk.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert (model.specific_stems is None) == share_stem


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
        assert terms["dao"].item() == 0.0


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
    terms_a, terms_b = model.losses(batch, a), model.losses(garbage, b)
    assert all(torch.equal(terms_a[k], terms_b[k]) for k in terms_a)


def test_bad_config_values(data):
    with pytest.raises(ConfigError, match="alpha: must be >= 0"):
        validate(ShaSpecConfig, {"alpha": -0.1}, "shaspec")
    with pytest.raises(ConfigError, match="trunk_depth: must be >= 1"):
        validate(ShaSpecConfig, {"trunk_depth": 0}, "shaspec")
    info, _ = data
    with pytest.raises(ConfigError, match="must divide"):
        ShaSpec(BuildContext(info, hidden=8), ShaSpecConfig(trunk_heads=3))

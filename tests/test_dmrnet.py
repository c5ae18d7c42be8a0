"""DMRNet: KL and hard-combination terms against hand arithmetic (including the official code's
broadcasting), hard-combination choice from accumulated variance, sampling vs mean, masking."""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.data.batch import Output
from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions
from mmbench.encoders.config import EncodersConfig, TabularEncoderConfig
from mmbench.models.base import BuildContext
from mmbench.models.dmrnet import DMRNet, DMRNetConfig, gaussian_kl, hard_combination_loss
from tests.conftest import batch_with_presence


@pytest.fixture(scope="module")
def data():
    info, splits = SyntheticDataset(SyntheticOptions(n_samples=40, image_size=16)).load()
    ctx = BuildContext(info=info, hidden=8,
                       encoders=EncodersConfig(tabular=TabularEncoderConfig(depth=1, heads=2, dropout=0.0)))
    return ctx, splits


def make(ctx: BuildContext, **kw) -> DMRNet:
    torch.manual_seed(0)
    return DMRNet(ctx, DMRNetConfig(**kw))


def batch_with(splits, rows):
    """A batch of len(rows) training samples with presence rows (image, tabular)."""
    return batch_with_presence(splits["train"], rows)


# ------------------------------------------------------------------------------------ equations
def test_kl_matches_hand_computation():
    mu = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # row 0: 1/2 [(1 + 0 - 0 - 1) + (2 + 1 - ln 2 - 1)] = 1 - ln(2)/2 ; row 1: 1/2 [0 + 0] = 0
    assert gaussian_kl(mu, logvar).item() == pytest.approx((1 - math.log(2) / 2) / 2)


def test_hard_combination_term_fixed_and_code_by_hand():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    hard = torch.tensor([False, True, True, False])
    # fixed: (2 + 3) / 4 ; code: n_hard * mean = 2 * (1 + 2 + 3 + 4) / 4
    assert hard_combination_loss(losses, hard, "fixed").item() == pytest.approx(1.25)
    assert hard_combination_loss(losses, hard, "code").item() == pytest.approx(5.0)
    none = torch.zeros(4, dtype=torch.bool)
    assert hard_combination_loss(losses, none, "fixed").item() == 0.0
    assert hard_combination_loss(losses, none, "code").item() == 0.0


def test_code_mode_equals_the_official_broadcasting():
    losses = torch.tensor([0.5, 1.5, 2.0, 0.25, 3.0])
    # availability p as the official code shapes it: (B, 2, 1, 1, 1); hard = "only the 2nd modality"
    p = torch.tensor([[1, 1], [0, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.float32).view(5, 2, 1, 1, 1)
    official = torch.sum(losses * ((1 - p[:, 0]) * p[:, 1])) / p.shape[0]  # (B,) x (B,1,1,1) -> (B,1,1,B)
    hard = torch.tensor([False, True, False, True, False])
    assert official.item() == pytest.approx(hard_combination_loss(losses, hard, "code").item())
    assert official.item() == pytest.approx(2 * losses.mean().item())
    # the described per-sample term: (1.5 + 0.25) / 5
    assert hard_combination_loss(losses, hard, "fixed").item() == pytest.approx(1.75 / 5)


# ----------------------------------------------------------------------- hard-combination choice
def _out(logvar: torch.Tensor, present: list[list[int]], classes: int = 8) -> Output:
    b = logvar.shape[0]
    return Output(logits=torch.zeros(b, classes), embeddings={},
                  aux={"mu": torch.zeros_like(logvar), "logvar": logvar,
                       "present_used": torch.tensor(present, dtype=torch.bool)})


def test_hard_combination_chosen_from_accumulated_variance(data):
    ctx, splits = data
    model = make(ctx, hcr_warmup_epochs=2, hcr_weight=0.5)
    model.train()
    pres = [[1, 0], [1, 0], [0, 1], [1, 1]]
    b = batch_with(splits, pres)
    ln = math.log
    # epoch 0: image-only rows sigma^2 = 2, 2; tabular-only sigma^2 = 1; complete row ignored (9)
    model.begin_epoch(0)
    terms = model.losses(b, _out(torch.tensor([[ln(2)] * 2, [ln(2)] * 2, [0.0] * 2, [ln(9)] * 2]), pres))
    assert terms["hcr"].item() == 0.0
    # epoch 1: image-only 1, 1; tabular-only 2.5
    model.begin_epoch(1)
    model.losses(b, _out(torch.tensor([[0.0] * 2, [0.0] * 2, [ln(2.5)] * 2, [0.0] * 2]), pres))
    assert model.hcr_rows.tolist() == [4.0, 2.0]
    assert model.hcr_var_sum.tolist() == pytest.approx([6.0, 3.5])
    assert int(model.hcr_weak) == -1
    # epoch 2: image mean 6/4 = 1.5 < tabular mean 3.5/2 = 1.75 -> tabular-only is the hard one
    model.begin_epoch(2)
    terms = model.losses(b, _out(torch.zeros(4, 2), pres))
    assert int(model.hcr_weak) == 1
    # zero logits over 8 classes: CE = ln 8 per row; one tabular-only row of 4: 0.5 * ln 8 / 4
    assert terms["hcr"].item() == pytest.approx(0.5 * math.log(8) / 4)
    assert model.hcr_rows.tolist() == [4.0, 2.0]  # frozen after the choice
    assert terms["kl"].item() == pytest.approx(0.0)


def test_epoch_fallback_counts_validation_switches(data):
    ctx, splits = data
    model = make(ctx)
    pres = [[1, 0], [0, 1]]
    b = batch_with(splits, pres)
    model.eval()
    model.train()  # no training step yet: still epoch 0
    assert model.epoch == 0
    model.losses(b, _out(torch.zeros(2, 2), pres))
    model.eval()
    model.train()
    assert model.epoch == 1
    model.eval()
    model.train()  # no step in between
    assert model.epoch == 1


def test_decision_survives_state_dict_round_trip(data):
    ctx, _ = data
    a, b = make(ctx), make(ctx)
    a.hcr_weak.fill_(0)
    b.load_state_dict(a.state_dict())
    assert b._decided and int(b.hcr_weak) == 0


# ------------------------------------------------------------------------------------- forward
def test_eval_uses_mean_and_training_samples(data):
    ctx, splits = data
    model = make(ctx, modality_dropout=False)
    b = batch_with(splits, [[1, 1], [1, 0], [0, 1], [1, 1]])
    model.eval()
    out = model(b)
    assert torch.allclose(out.logits, model.classifier(out.aux["mu"]))
    assert torch.equal(model(b).logits, out.logits)
    model.train()
    out = model(b)
    assert not torch.allclose(out.logits, model.classifier(out.aux["mu"]))


def test_modality_dropout_never_adds_and_zeroes_features(data):
    ctx, splits = data
    model = make(ctx)
    model.train()
    rows = [[1, 1]] * 20 + [[1, 0], [0, 1]]
    b = batch_with(splits, rows)
    torch.manual_seed(2)
    out = model(b)
    used = out.aux["present_used"]
    assert not (used & ~b.present).any() and used.any(dim=1).all()
    assert used[20:].tolist() == [[True, False], [False, True]]
    assert {tuple(r) for r in used[:20].tolist()} == {(True, True), (True, False), (False, True)}
    for j, m in enumerate(("image", "tabular")):
        assert out.embeddings[m][~used[:, j]].abs().sum() == 0


def test_one_row_training_batch(data):
    ctx, splits = data
    model = make(ctx)
    model.train()
    b = batch_with(splits, [[1, 1]])
    assert torch.isfinite(model(b).logits).all()


@pytest.mark.parametrize("mode", ["fixed", "code"])
@pytest.mark.parametrize("rows", [[[1, 0]] * 4, [[0, 1]] * 4, [[1, 1], [1, 0], [0, 1], [1, 1]]])
def test_no_nan_and_backward_on_any_pattern_mix(data, rows, mode):
    ctx, splits = data
    model = make(ctx, hcr_mode=mode, hcr_warmup_epochs=0)
    model.train()
    b = batch_with(splits, rows)
    out = model(b)
    terms = model.losses(b, out)
    assert set(terms) == {"task", "kl", "hcr"}
    total = sum(terms.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_absent_raw_data_changes_nothing(data):
    ctx, splits = data
    model = make(ctx)
    model.eval()
    split = splits["train"]
    present = torch.ones(len(split), 2, dtype=torch.bool)
    present[:4, 0] = False
    present[4:8, 1] = False
    idx = torch.arange(10)
    before = model(split.batch(idx, present))
    old_img, old_num = split.inputs["image"]["pixels"].clone(), split.inputs["tabular"]["num"].clone()
    try:
        split.inputs["image"]["pixels"][:4] = 255 - split.inputs["image"]["pixels"][:4]
        split.inputs["tabular"]["num"][4:8] += 7.0
        after = model(split.batch(idx, present))
    finally:
        split.inputs["image"]["pixels"] = old_img
        split.inputs["tabular"]["num"] = old_num
    assert torch.equal(before.logits, after.logits)


def test_kl_and_hard_combination_compute_in_the_input_dtype():
    """float64 in, float64 out (``gradcheck`` passes); float32 and half precision give float32."""
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert gaussian_kl(mu, logvar).dtype == torch.float64
    assert torch.autograd.gradcheck(gaussian_kl, (mu, logvar))
    per_sample = torch.rand(5, generator=g, dtype=torch.float64, requires_grad=True)
    hard = torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool)
    for mode in ("fixed", "code"):
        assert hard_combination_loss(per_sample, hard, mode).dtype == torch.float64
        assert torch.autograd.gradcheck(lambda p, mode=mode: hard_combination_loss(p, hard, mode), (per_sample,))
    mu32, lv32 = mu.detach().float(), logvar.detach().float()
    assert gaussian_kl(mu32, lv32).dtype == torch.float32
    assert gaussian_kl(mu32, lv32).item() == pytest.approx(gaussian_kl(mu, logvar).item(), rel=1e-5)
    assert gaussian_kl(mu32.bfloat16(), lv32.bfloat16()).dtype == torch.float32
    assert hard_combination_loss(per_sample.detach().half(), hard).dtype == torch.float32

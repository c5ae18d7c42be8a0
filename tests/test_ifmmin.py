"""IF-MMIN: CMD, masked MSE and the imagination cascade against hand arithmetic; stages, teacher,
student view, loss masking, and the clear failure when too few complete rows exist."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions
from mmbench.encoders.config import EncodersConfig, TabularEncoderConfig
from mmbench.models.base import BuildContext
from mmbench.models.ifmmin import IFMMIN, IFMMINConfig, ResidualAE, cmd, masked_mse
from tests.conftest import batch_with_presence

TINY = dict(ae_layers=(8, 4), ae_blocks=2, cls_layers=(8,), pretrain_min_rows=2,
            pretrain_epochs=1, student_epochs=1)


@pytest.fixture(scope="module")
def data():
    info, splits = SyntheticDataset(SyntheticOptions(n_samples=40, image_size=16)).load()
    ctx = BuildContext(info=info, hidden=8,
                       encoders=EncodersConfig(tabular=TabularEncoderConfig(depth=1, heads=2, dropout=0.0)))
    return ctx, splits


def make(ctx: BuildContext, **kw) -> IFMMIN:
    torch.manual_seed(0)
    return IFMMIN(ctx, IFMMINConfig(**{**TINY, **kw}))


def batch_with(splits, rows):
    """A batch of len(rows) training samples with presence rows (image, tabular)."""
    return batch_with_presence(splits["train"], rows)


# ------------------------------------------------------------------------------------------- CMD
def test_cmd_matches_hand_computation():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    y = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    # means: x (1, 2), y (0, 1) -> ||(1, 1)|| = sqrt 2
    # central moments of x per column: k=2 (1, 1), k=3 (0, 0), k=4 (1, 1), k=5 (0, 0)
    # central moments of y: column 0 is constant -> 0; column 1 is (-1, 1): k=2 1, k=3 0, k=4 1, k=5 0
    # differences: k=2 ||(1, 0)|| = 1, k=3 0, k=4 ||(1, 0)|| = 1, k=5 0
    assert cmd(x, y, 5).item() == pytest.approx(math.sqrt(2) + 2.0)
    assert cmd(x, y, 2).item() == pytest.approx(math.sqrt(2) + 1.0)
    assert cmd(x, y, 1).item() == pytest.approx(math.sqrt(2))


def test_cmd_masks_rows_and_handles_empty_and_equal():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [100.0, -50.0]])
    y = torch.tensor([[7.0, 7.0], [0.0, 0.0], [0.0, 2.0]])
    mx, my = torch.tensor([True, True, False]), torch.tensor([False, True, True])
    assert cmd(x, y, 5, mx, my).item() == pytest.approx(math.sqrt(2) + 2.0)
    assert cmd(x, y, 5, mx, torch.zeros(3, dtype=torch.bool)).item() == 0.0
    same = torch.randn(4, 3, requires_grad=True)
    value = cmd(same, same.detach().clone(), 5)
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(same.grad).all()


def test_masked_mse_matches_hand_computation():
    pred = torch.tensor([[[1.0, 2.0], [5.0, 5.0]], [[3.0, 3.0], [1.0, 1.0]]])
    target = torch.zeros_like(pred)
    cover = torch.tensor([[True, False], [True, True]])
    # covered squared errors: (1 + 4) + (9 + 9) + (1 + 1) = 25 over 3 slots x 2 dims = 6 elements
    assert masked_mse(pred, target, cover).item() == pytest.approx(25 / 6)
    assert masked_mse(pred, target, torch.zeros(2, 2, dtype=torch.bool)).item() == 0.0
    assert masked_mse(pred, target, torch.ones(2, 2, dtype=torch.bool)).item() == pytest.approx(
        nn.functional.mse_loss(pred, target).item())


# ------------------------------------------------------------------------------------ AE cascade
def test_cascade_shapes():
    ae = ResidualAE(dim=8, layers=(6, 5, 3), n_blocks=4)
    recon, latent = ae(torch.randn(3, 8), torch.randn(3, 8))
    assert recon.shape == (3, 8) and latent.shape == (3, 4 * 3)
    widths = [(m.in_features, m.out_features) for m in ae.encoders[0] if isinstance(m, nn.Linear)]
    assert widths == [(8, 6), (6, 5), (5, 3)]
    widths = [(m.in_features, m.out_features) for m in ae.decoders[0] if isinstance(m, nn.Linear)]
    assert widths == [(3, 5), (5, 6), (6, 8)]


def _linear_ae(cascade: str) -> ResidualAE:
    """dim 2, one latent unit: Enc(x) = x1 + x2, Dec(l) = (l, 0), transition = identity on x >= 0."""
    ae = ResidualAE(dim=2, layers=(1,), n_blocks=2, cascade=cascade)
    with torch.no_grad():
        for enc, dec in zip(ae.encoders, ae.decoders, strict=True):
            enc[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
            enc[0].bias.zero_()
            dec[0].weight.copy_(torch.tensor([[1.0], [0.0]]))
            dec[0].bias.zero_()
        for k in (0, 2):
            ae.transition[k].weight.copy_(torch.eye(2))
            ae.transition[k].bias.zero_()
    return ae


def test_cascade_wiring_paper_and_code_by_hand():
    e, h = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.0]])
    # paper: block 1 in = E + H' = (1.5, 2) -> l1 = 3.5 -> out (3.5, 0);
    #        block 2 in = out1 + H' = (4, 0) -> l2 = 4 -> out (4, 0); E_hat = T(out2) = (4, 0)
    recon, latent = _linear_ae("paper")(e, h)
    assert recon.tolist() == [[4.0, 0.0]] and latent.tolist() == [[3.5, 4.0]]
    # code: x1 = E + H' = (1.5, 2) -> l1 = 3.5; x2 = x1 + H' = (2, 2) -> l2 = 4 -> out (4, 0);
    #       E_hat = T(x2 + out2) = (6, 2)
    recon, latent = _linear_ae("code")(e, h)
    assert recon.tolist() == [[6.0, 2.0]] and latent.tolist() == [[3.5, 4.0]]


# -------------------------------------------------------------------------------- stages/teacher
def test_stages_filter_complete_rows_and_freeze_teacher(data):
    ctx, splits = data
    model = make(ctx, pretrain_epochs=3, student_epochs=4, pretrain_min_rows=5)
    pre, stu = model.stages()
    assert (pre.name, pre.epochs, pre.min_rows, stu.name, stu.epochs) == ("pretrain", 3, 5, "student", 4)
    b = batch_with(splits, [[1, 1], [1, 0], [0, 1], [1, 1]])
    assert pre.rows(b).tolist() == [True, False, False, True]

    model.begin_stage("pretrain")
    assert not any(p.requires_grad for p in model.ae.parameters())
    assert all(p.requires_grad for p in model.pretrain_classifier.parameters())
    with torch.no_grad():  # "training" changes the student encoders
        for p in model.encoders.parameters():
            p.add_(0.1)
    model.begin_stage("student")
    for a, b_ in zip(model.encoders.state_dict().values(), model.teacher["encoders"].state_dict().values(),
                     strict=True):
        assert torch.equal(a, b_)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert all(p.requires_grad for p in model.ae.parameters())
    assert not any(p.requires_grad for p in model.pretrain_classifier.parameters())
    model.train()
    assert model.encoders.training and not model.teacher.training
    with pytest.raises(ValueError):
        model.begin_stage("finetune")


@pytest.mark.parametrize("patterns", ["all", "incomplete"])
def test_student_view_only_drops_from_complete_rows(data, patterns):
    ctx, splits = data
    model = make(ctx, student_patterns=patterns)
    present = torch.tensor([[1, 1]] * 200 + [[1, 0], [0, 1]], dtype=torch.bool)
    torch.manual_seed(1)
    view = model._student_view(present)
    assert not (view & ~present).any() and view.any(dim=1).all()
    assert view[200:].tolist() == [[True, False], [False, True]]
    kinds = {tuple(r) for r in view[:200].tolist()}
    expected = {(True, True), (True, False), (False, True)} if patterns == "all" else {(True, False),
                                                                                      (False, True)}
    assert kinds == expected


# ------------------------------------------------------------------------------------------ loss
def test_pretrain_terms_are_ce_and_cmd(data):
    ctx, splits = data
    model = make(ctx)
    model.begin_stage("pretrain")
    model.train()
    b = batch_with(splits, [[1, 1]] * 6)
    out = model(b)
    terms = model.losses(b, out)
    assert set(terms) == {"task", "cmd"}
    h = out.aux["invariant"].view(6, 2, -1)
    assert terms["cmd"].item() == pytest.approx(cmd(h[:, 0], h[:, 1], 5).item())
    ce = nn.functional.cross_entropy(out.logits, b.y)
    assert terms["task"].item() == pytest.approx(ce.item())


@pytest.mark.parametrize("target", ["missing", "code"])
def test_student_terms_are_masked_to_existing_targets(data, target):
    ctx, splits = data
    model = make(ctx, recon_target=target, recon_weight=2.0, invariant_weight=3.0)
    model.begin_stage("student")
    model.train()
    b = batch_with(splits, [[1, 1], [1, 1], [1, 1], [1, 1], [1, 0], [0, 1]])
    torch.manual_seed(3)
    out = model(b)
    terms = model.losses(b, out)
    assert set(terms) == {"task", "recon", "invariant"}
    seen, true = out.aux["present_used"], b.present
    with torch.no_grad():
        t_e = torch.stack([model.teacher["encoders"][m](b.inputs[m])[1] for m in ("image", "tabular")], 1)
        t_h = model.teacher["inv"](t_e)
    recon = out.aux["recon"].view(6, 2, -1)
    h = out.aux["invariant"].view(6, 2, -1)
    d = h.shape[-1]
    # invariant: squared error summed over the slots whose modality really exists, / (d * count)
    se = ((h - t_h) ** 2).sum(-1)
    want_inv = 3.0 * se[true].sum() / (d * true.sum())
    assert terms["invariant"].item() == pytest.approx(want_inv.item(), rel=1e-5)
    if target == "missing":
        cover = true & ~seen
        se = ((recon - t_e) ** 2).sum(-1)
        want = se[cover].sum() / (d * cover.sum()) if cover.any() else torch.tensor(0.0)
    else:
        zero = {m: {k: torch.zeros_like(t[:1]) for k, t in b.inputs[m].items()} for m in ("image", "tabular")}
        with torch.no_grad():
            const = torch.stack([model.teacher["encoders"][m](zero[m])[1] for m in ("image", "tabular")], 1)
        tgt = torch.where(seen.unsqueeze(-1), const, t_e)
        se = ((recon - tgt) ** 2).sum(-1)
        want = se[true].sum() / (d * true.sum())
    assert terms["recon"].item() == pytest.approx(2.0 * want.item(), rel=1e-5)


def test_recon_is_zero_without_any_missing_target(data):
    ctx, splits = data
    model = make(ctx)
    model.begin_stage("student")
    model.train()
    b = batch_with(splits, [[1, 0], [0, 1], [1, 0], [0, 1]])  # no complete row: nothing to imagine
    terms = model.losses(b, model(b))
    assert terms["recon"].item() == 0.0


@pytest.mark.parametrize("stage", ["pretrain", "student"])
@pytest.mark.parametrize("rows", [[[1, 0]] * 4, [[0, 1]] * 4, [[1, 1], [1, 0], [0, 1], [1, 1]]])
def test_no_nan_and_backward_on_any_pattern_mix(data, stage, rows):
    ctx, splits = data
    model = make(ctx)
    model.begin_stage(stage)
    model.train()
    b = batch_with(splits, rows)
    out = model(b)
    terms = model.losses(b, out)
    total = sum(terms.values())
    assert torch.isfinite(total)
    total.backward()
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    for j, m in enumerate(("image", "tabular")):
        assert out.embeddings[m][~b.present[:, j]].abs().sum() == 0


def test_absent_raw_data_changes_nothing(data):
    ctx, splits = data
    model = make(ctx)
    model.eval()
    present = torch.ones(len(splits["train"]), 2, dtype=torch.bool)
    present[:4, 0] = False
    present[4:8, 1] = False
    idx = torch.arange(10)
    before = model(splits["train"].batch(idx, present))
    split = splits["train"]
    old = {k: v.clone() for k, v in split.inputs["image"].items()}, {k: v.clone() for k, v in
                                                                      split.inputs["tabular"].items()}
    try:
        split.inputs["image"]["pixels"][:4] = 255 - split.inputs["image"]["pixels"][:4]
        split.inputs["tabular"]["num"][4:8] += 7.0
        after = model(split.batch(idx, present))
    finally:
        split.inputs["image"].update(old[0])
        split.inputs["tabular"].update(old[1])
    assert torch.equal(before.logits, after.logits)


# ----------------------------------------------------------------------------------- with trainer
def _fit(ctx, splits, present, **kw):
    from mmbench.balancers.none import NoBalancer
    from mmbench.config import TrainConfig
    from mmbench.heads.native import NativeHead
    from mmbench.models.base import NoConfig
    from mmbench.pipeline import Pipeline
    from mmbench.train import Loader, fit

    model = make(ctx, **kw)
    pipe = Pipeline(model, NativeHead(ctx, model.embed_dims(), NoConfig()), NoBalancer(ctx, {}, NoConfig()))
    cfg = TrainConfig(epochs=1, batch_size=8, device="cpu", amp=False)
    loaders = {"train": Loader(splits["train"], present, 8, shuffle=True, seed=0),
               "val": Loader(splits["val"], torch.ones(len(splits["val"]), 2, dtype=torch.bool), 16)}
    return fit(pipe, loaders, cfg, primary_metric="accuracy", task="multiclass")


def test_too_few_complete_rows_fails_with_the_count(data):
    from mmbench.errors import RunFailed

    ctx, splits = data
    n = len(splits["train"])
    present = torch.ones(n, 2, dtype=torch.bool)
    present[3:, 0] = False  # only 3 complete training rows
    with pytest.raises(RunFailed, match=r"pretrain.*at least 10.*found 3"):
        _fit(ctx, splits, present, pretrain_min_rows=10)


def test_both_stages_run_in_one_fit(data):
    ctx, splits = data
    n = len(splits["train"])
    present = torch.ones(n, 2, dtype=torch.bool)
    present[: n // 4, 0] = False
    present[n // 4: n // 2, 1] = False
    result = _fit(ctx, splits, present)
    assert [row["stage"] for row in result.curves] == ["pretrain", "student"]
    assert set(result.curves[0]["train_loss"]) == {"task", "cmd", "total"}
    assert set(result.curves[1]["train_loss"]) == {"task", "recon", "invariant", "total"}


# ----------------------------------------------------------------------------------- precision
def test_cmd_and_masked_mse_compute_in_the_input_dtype():
    """float64 in, float64 out: ``gradcheck`` passes; float32 stays float32, half precision is lifted."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    mx = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    my = torch.tensor([1, 0, 1, 1, 1], dtype=torch.bool)
    assert cmd(x, y, 3, mx, my).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda a, b: cmd(a, b, 3, mx, my), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: cmd(a, b, 5), (x, y))
    pred = torch.randn(4, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(4, 2, 3, generator=g, dtype=torch.float64)
    cover = torch.tensor([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda p: masked_mse(p, target, cover), (pred,))
    # float32 results equal the double-precision ones to float32 accuracy, in float32
    x32, y32 = x.detach().float(), y.detach().float()
    assert cmd(x32, y32, 3, mx, my).dtype == torch.float32
    assert cmd(x32, y32, 3, mx, my).item() == pytest.approx(cmd(x, y, 3, mx, my).item(), rel=1e-5)
    assert cmd(x32.bfloat16(), y32.bfloat16(), 3).dtype == torch.float32

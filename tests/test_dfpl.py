"""DFPL: each loss term against hand-computed values (Eq. 1, 3, 4-5, 6-8), Eq. 9 per pattern, the
Eq. 11 mask, the loss dict per ablation, no NaN on degenerate batches, leakage, a short learning run,
and the step-time benchmark script."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import ot
import pytest
import torch

from mmbench.config import list_names, load_method, load_protocol
from mmbench.data.batch import MODALITIES, Batch, Output
from mmbench.errors import ConfigError
from mmbench.models import dfpl_parts as P
from mmbench.models.dfpl import DFPL, DFPLConfig
from mmbench.registry import METHODS
from mmbench.typed import validate
from tests.conftest import MIXED, make_batch, tiny_ctx

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared, oversubscribed CPU torch's thread pool stalls tiny ops."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def build(hidden: int = 16, seed: int = 0, **kw) -> DFPL:
    torch.manual_seed(seed)
    return DFPL(tiny_ctx(hidden), DFPLConfig(**kw))


def hand_batch(present: list[tuple[bool, bool]], y: list[int]) -> Batch:
    """A batch whose only used fields are ``present`` and ``y`` (losses read features from aux)."""
    n = len(y)
    return Batch(inputs={}, present=torch.tensor(present), y=torch.tensor(y), index=torch.arange(n))


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_registered():
    assert METHODS.get("dfpl") is DFPL
    assert "2606.05455" in DFPL.cite
    assert DFPL.save_aux == ("cma_attention",)


# ---- Eq. 1 ------------------------------------------------------------------------------------------

def test_abs_cosine_by_hand():
    got = P.abs_cosine(t([[1, 0], [3, 4], [1, 0], [0, 0]]), t([[1, 1], [-4, 3], [-1, -1], [1, 2]]))
    # [1,0].[1,1] = 1, norms 1 and sqrt2 -> 1/sqrt2; orthogonal -> 0; negative -> |-1/sqrt2|; zero vector -> 0
    want = t([1 / math.sqrt(2), 0.0, 1 / math.sqrt(2), 0.0])
    assert torch.allclose(got, want, atol=1e-6)


def test_jsd_softmax_by_hand():
    # a = [0, 0] -> P = [1/2, 1/2]; b = [ln 3, 0] -> Q = [3/4, 1/4]; M = [5/8, 3/8]
    kl_pm = 0.5 * math.log(0.5 / 0.625) + 0.5 * math.log(0.5 / 0.375)
    kl_qm = 0.75 * math.log(0.75 / 0.625) + 0.25 * math.log(0.25 / 0.375)
    got = P.jsd(t([[0.0, 0.0]]), t([[math.log(3.0), 0.0]]), "softmax")
    assert got.item() == pytest.approx(0.5 * kl_pm + 0.5 * kl_qm, abs=1e-6)
    assert P.jsd(t([[1.0, -2.0]]), t([[1.0, -2.0]])).item() == pytest.approx(0.0, abs=1e-7)


def test_jsd_sigmoid_is_drfuse_code_form():
    # a = 0 -> P = 1/2; b = ln 3 -> Q = 3/4; M = 5/8; 1/2 [P ln(P/M) + Q ln(Q/M)]
    want = 0.5 * (0.5 * math.log(0.5 / 0.625) + 0.75 * math.log(0.75 / 0.625))
    got = P.jsd(t([[0.0]]), t([[math.log(3.0)]]), "sigmoid")
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert torch.isfinite(P.jsd(t([[-500.0]]), t([[500.0]]), "sigmoid")).all()


def test_eq1_terms_are_masked_and_weighted():
    """tdis = alpha * sum_m mean_{rows with m} |cos|; tali = alpha * mean_{complete rows} JSD."""
    model = build(hidden=2, sspm=False, pfa=False, fusion="concat", alpha=2.0)
    batch = hand_batch([(True, True), (True, False), (False, True)], [0, 1, 2])
    aux = {
        "t_shared_image": t([[1, 0], [1, 0], [0, 0]]), "t_spec_image": t([[1, 1], [0, 1], [0, 0]]),
        "t_shared_tabular": t([[math.log(3.0), 0], [0, 0], [3, 4]]),
        "t_spec_tabular": t([[1, 0], [0, 0], [-4, 3]]),
    }
    terms = model.losses(batch, Output(logits=torch.zeros(3, 8), aux=aux))
    assert set(terms) == {"task", "tdis", "tali"}
    # image rows 0, 1: |cos| 1/sqrt2 and 0 -> mean 1/(2 sqrt2); tabular rows 0, 2: |cos| 1 and 0 -> 1/2
    assert terms["tdis"].item() == pytest.approx(2.0 * (1 / (2 * math.sqrt(2)) + 0.5), abs=1e-6)
    # only row 0 is complete: JSD(softmax[1,0]... ) of [1,0] vs [ln3, 0]
    p = [math.e / (math.e + 1), 1 / (math.e + 1)]
    q = [0.75, 0.25]
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    jsd = 0.5 * sum(a * math.log(a / c) for a, c in zip(p, m, strict=True)) + \
        0.5 * sum(b * math.log(b / c) for b, c in zip(q, m, strict=True))
    assert terms["tali"].item() == pytest.approx(2.0 * jsd, abs=1e-6)
    assert terms["task"].item() == pytest.approx(math.log(8.0), abs=1e-6)  # uniform logits


# ---- Eq. 2-3 ----------------------------------------------------------------------------------------

def test_diversity_by_hand():
    protos = t([[[1, 0], [1, 0], [0, 1]],        # cos(1,2) = 1, cos(., 3) = 0
                [[1, 0], [1, 1], [0, -1]]])      # cos(1,2) = 1/sqrt2, cos(1,3) = 0, cos(2,3) = -1/sqrt2
    got = P.diversity(protos, delta=0.2)
    # sum over ordered pairs i != j of max(0, cos - 0.2), divided by K (K - 1) = 6
    want0 = 2 * (1.0 - 0.2) / 6
    want1 = 2 * (1 / math.sqrt(2) - 0.2) / 6
    assert torch.allclose(got, t([want0, want1]), atol=1e-6)


def test_tpe_follows_eq2():
    torch.manual_seed(0)
    tpe = P.TokenPrototypeExtractor(dim=4, num_prototypes=3, ffn_mult=2.0)
    tokens = torch.randn(2, 5, 4)
    out = tpe(tokens)
    assert out.shape == (2, 3, 4)
    q = tpe.queries.detach() @ tpe.w_q.weight.t()
    k, v = tokens @ tpe.w_k.weight.t(), tokens @ tpe.w_v.weight.t()
    f1 = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1) @ v + tpe.queries.detach()  # sqrt(D) = 2
    assert torch.allclose(out, tpe.ffn(f1) + f1, atol=1e-5)


def test_four_independent_query_groups():
    model = build()
    queries = [model.tpe[k].queries for k in ("shared_image", "spec_image", "shared_tabular", "spec_tabular")]
    assert len({id(q) for q in queries}) == 4
    assert all(q.shape == (5, 16) for q in queries)


# ---- Eq. 4-5 ----------------------------------------------------------------------------------------

def test_cost_matrix_by_hand():
    x = t([[[0, 0], [1, 0]]])
    y = t([[[0, 1], [2, 0]]])
    # |(0,0)-(0,1)|^2 = 1, |(0,0)-(2,0)|^2 = 4, |(1,0)-(0,1)|^2 = 2, |(1,0)-(2,0)|^2 = 1
    assert torch.equal(P.squared_distances(x, y), t([[[1, 4], [2, 1]]]))


def test_normalized_cost_option():
    x, y = t([[[3, 0], [0, 2]]]), t([[[1, 0], [1, 1]]])
    # unit vectors [1,0], [0,1] vs [1,0], [1,1]/sqrt2: 2 - 2 cos
    want = t([[[0, 2 - math.sqrt(2)], [2, 2 - math.sqrt(2)]]])
    assert torch.allclose(P.squared_distances(x, y, normalize=True), want, atol=1e-6)


def test_entropic_ot_two_by_two_closed_form():
    """Uniform 2x2 plans are [[x, 1/2 - x], [1/2 - x, x]]; the optimum of Eq. 5 has
    log(x / (1/2 - x)) = -(C11 + C22 - C12 - C21) / (2 eps)."""
    eps = 0.5
    cost = t([[[0, 1], [1, 0]]])
    x = 0.5 * sig(2.0 / (2 * eps))  # Delta = -2
    want = 2 * (0.5 - x) * 1.0 + eps * (2 * x * math.log(x) + 2 * (0.5 - x) * math.log(0.5 - x))
    got = P.entropic_ot(cost, eps, max_iter=1000, tol=1e-9)
    assert got.item() == pytest.approx(want, abs=1e-6)
    plan = P.sinkhorn_plan(cost, eps, max_iter=1000, tol=1e-9)
    assert torch.allclose(plan, t([[[x, 0.5 - x], [0.5 - x, x]]]), atol=1e-6)


def test_entropic_ot_matches_pot_sinkhorn():
    torch.manual_seed(0)
    cost = torch.rand(3, 3, dtype=torch.float64) * 2
    a = torch.full((3,), 1 / 3, dtype=torch.float64)
    plan = ot.sinkhorn(a, a, cost, 0.1, method="sinkhorn_log", numItermax=20000, stopThr=1e-12)
    want = (plan * cost).sum() + 0.1 * (plan * plan.log()).sum()
    for scaling in (0.5, 0.0):
        got = P.entropic_ot(cost[None], 0.1, max_iter=2000, tol=1e-10, scaling=scaling)
        assert got.item() == pytest.approx(want.item(), abs=1e-7)


def test_entropic_ot_with_large_costs_is_close_to_converged_pot():
    """Raw squared distances (tens to hundreds) at eps = 0.1, with the default iteration budget,
    against POT's own (non-batched, numpy) epsilon-scaling Sinkhorn run to convergence."""
    torch.manual_seed(1)
    x, y = torch.randn(4, 5, 32, dtype=torch.float64), torch.randn(4, 5, 32, dtype=torch.float64)
    cost = P.squared_distances(x, y)
    a = np.full(5, 0.2)
    want = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns about its outer-loop budget; the plan has converged
        for c in cost.numpy():
            g = ot.bregman.sinkhorn_epsilon_scaling(a, a, c, 0.1, numItermax=100, epsilon0=1e4,
                                                     numInnerItermax=50, stopThr=1e-12)
            assert np.abs(g.sum(1) - 0.2).max() < 1e-9
            want.append(float((g * c).sum() + 0.1 * (g * np.log(g)).sum()))
    got = P.entropic_ot(cost, 0.1)  # defaults: <= 50 iterations at eps, tol 1e-4, scaling 0.5
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-3)


def test_entropic_ot_gradient_is_the_plan():
    cost = t([[[0, 1, 2], [1, 0, 1], [2, 1, 0]]]).requires_grad_(True)
    P.entropic_ot(cost, 0.5, max_iter=2000, tol=1e-9).sum().backward()
    plan = P.sinkhorn_plan(cost.detach(), 0.5, max_iter=2000, tol=1e-9)
    assert torch.allclose(cost.grad, plan, atol=1e-6)
    assert torch.allclose(plan.sum(2), torch.full((1, 3), 1 / 3), atol=1e-6)


def test_pali_terms_use_complete_rows_and_omega():
    model = build(hidden=2, pfa=True, cali=False, fusion="concat", gamma=0.5, omega=0.25, beta=0.0,
                  ot_cost="sqeuclidean")
    batch = hand_batch([(True, True), (True, False)], [0, 1])
    sh_i, sh_t = t([[[0, 0], [1, 0]], [[9, 9], [9, 9]]]), t([[[0, 1], [2, 0]], [[0, 0], [0, 0]]])
    sp_i, sp_t = t([[[0, 0], [0, 0]], [[5, 5], [5, 5]]]), t([[[0, 0], [0, 0]], [[0, 0], [0, 0]]])
    aux = _full_aux(sh_i, sp_i, sh_t, sp_t)
    terms = model.losses(batch, Output(logits=torch.zeros(2, 8), aux=aux))
    # row 0 only (complete). Shared cost [[1, 4], [2, 1]]: Delta = 1 + 1 - 4 - 2 = -4, eps = 0.1
    x = 0.5 * sig(4 / 0.2)
    entropy = 2 * x * math.log(x) + 2 * (0.5 - x) * math.log(0.5 - x)
    shared = 2 * x * 1.0 + (0.5 - x) * (4 + 2) + 0.1 * entropy
    assert terms["pali_shared"].item() == pytest.approx(0.5 * shared, rel=1e-4)
    # specific cost all zero: uniform plan 1/4, value = eps * 4 * (1/4) ln(1/4)
    assert terms["pali_spec"].item() == pytest.approx(0.5 * 0.25 * 0.1 * math.log(0.25), rel=1e-4)


def test_pali_relative_cost_by_hand():
    """Default ``ot_cost="relative"``: Eq. 5 on Eq. 4's cost divided by its mean over the K x K pairs."""
    model = build(hidden=2, pfa=True, cali=False, fusion="concat", gamma=1.0, omega=1.0, beta=0.0)
    batch = hand_batch([(True, True)], [0])
    sh_i, sh_t = t([[[0, 0], [1, 0]]]), t([[[0, 1], [2, 0]]])
    sp_i, sp_t = t([[[0, 0], [3, 0]]]), t([[[0, 0], [3, 0]]])
    terms = model.losses(batch, Output(logits=torch.zeros(1, 8), aux=_full_aux(sh_i, sp_i, sh_t, sp_t)))
    # shared: C = [[1, 4], [2, 1]], mean 2 -> [[1/2, 2], [1, 1/2]]; Delta = 1/2 + 1/2 - 2 - 1 = -2, eps = 0.1
    x = 0.5 * sig(2 / 0.2)
    entropy = 2 * x * math.log(x) + 2 * (0.5 - x) * math.log(0.5 - x)
    want = 2 * x * 0.5 + (0.5 - x) * (2 + 1) + 0.1 * entropy
    assert terms["pali_shared"].item() == pytest.approx(want, rel=1e-4)
    # specific: C = [[0, 9], [9, 0]], mean 4.5 -> [[0, 2], [2, 0]]; Delta = -4
    x = 0.5 * sig(4 / 0.2)
    entropy = 2 * x * math.log(x) + 2 * (0.5 - x) * math.log(0.5 - x)
    assert terms["pali_spec"].item() == pytest.approx(2 * (0.5 - x) * 2 + 0.1 * entropy, rel=1e-4)


def test_relative_cost_is_scale_free():
    """The relative OT value is unchanged when every prototype is scaled, and its gradient has no
    component along that scaling (so shrinking all prototypes cannot lower it, unlike raw Eq. 4)."""
    torch.manual_seed(0)
    x, y = torch.randn(3, 5, 8, dtype=torch.float64), torch.randn(3, 5, 8, dtype=torch.float64)
    value = lambda a, b: P.entropic_ot(P.relative_cost(P.squared_distances(a, b)), 0.1, max_iter=500,  # noqa: E731
                                       tol=1e-10).sum()
    assert value(3 * x, 3 * y).item() == pytest.approx(value(x, y).item(), rel=1e-6)
    xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    value(xg, yg).backward()
    radial = (xg.grad * x).sum() + (yg.grad * y).sum()  # d/ds value(s x, s y) at s = 1
    assert abs(radial.item()) < 1e-6 * (xg.grad.norm() * x.norm()).item()
    raw = P.entropic_ot(P.squared_distances(x, y), 0.1).sum()
    assert P.entropic_ot(P.squared_distances(x / 2, y / 2), 0.1).sum() < raw / 3  # raw Eq. 4 rewards shrinking


def test_tpe_query_init_scales():
    torch.manual_seed(0)
    unit = P.TokenPrototypeExtractor(dim=256, num_prototypes=64, query_init="unit")
    normal = P.TokenPrototypeExtractor(dim=256, num_prototypes=64, query_init="normal")
    assert unit.queries.std().item() == pytest.approx(1 / 16, rel=0.05)  # N(0, 1/D): norm about 1
    assert normal.queries.std().item() == pytest.approx(1.0, rel=0.05)
    assert P.query_std(64, "unit") == 0.125 and P.query_std(64, "normal") == 1.0


def test_diagnostics_by_hand():
    model = build(hidden=2, gamma=1.0)
    batch = hand_batch([(True, True), (True, True), (True, False)], [0, 1, 2])
    # shared image prototypes: two complete rows and an image-only one
    sh_i = t([[[1, 0], [0, 1]], [[3, 0], [0, 1]], [[2, 0], [0, 1]]])
    sh_t = t([[[1, 0], [0, 1]], [[3, 0], [0, 1]], [[0, 0], [0, 0]]])  # the same on complete rows
    sp = t([[[0, 0], [9, 9]]] * 3)
    aux = _full_aux(sh_i, sp, sh_t, sp)
    attn = torch.zeros(3, 8, 6)
    attn[:2, :, 0], attn[:2, :, 3] = 0.75, 0.25  # complete rows: 3/4 on t_spec_img, 1/4 on p_shared_fused
    attn[2, :, 1] = 1.0                           # the image-only row is not averaged in
    aux["cma_attention"] = attn
    d = model.diagnostics(batch, Output(logits=torch.zeros(3, 8), aux=aux))
    # slot 0 over the three image rows: values 1, 3, 2 -> variance 2/3, mean^2 4 -> 1/6; slot 1 constant -> 0
    assert d["proto_var_shared_image"] == pytest.approx((1 / 6 + 0) / 2)
    # tabular rows 0, 1: slot 0 values 1, 3 -> 1/4; slot 1 constant
    assert d["proto_var_shared_tabular"] == pytest.approx(1 / 8)
    assert d["proto_var_spec_image"] == 0.0 and d["t_var_spec_image"] == 0.0
    assert d["attn_t_spec_img"] == pytest.approx(0.75) and d["attn_p_shared_fused"] == pytest.approx(0.25)
    assert d["attn_prototype_rows"] == pytest.approx(0.25) and d["attn_p_spec_img"] == 0.0
    assert d["shared_gap"] == 0.0  # image and tabular shared prototypes coincide on complete rows
    # identical prototype sets: the plan is the identity (a permutation), matched cost 0
    assert d["ot_plan_peak_shared"] == pytest.approx(1.0, abs=1e-3) and d["ot_match_shared"] < 1e-3
    # specific cost of the rows: [[0, 162], [162, 0]], mean 81
    assert d["ot_cost_spec"] == pytest.approx(81.0)


def _full_aux(sh_i, sp_i, sh_t, sp_t) -> dict[str, torch.Tensor]:
    aux = {"P_shared_image": sh_i, "P_spec_image": sp_i, "P_shared_tabular": sh_t, "P_spec_tabular": sp_t}
    for k in list(aux):
        aux["p" + k[1:]] = aux[k].mean(1)
        aux["t" + k[1:]] = aux[k].mean(1)
    return aux


# ---- Eq. 6-8 ----------------------------------------------------------------------------------------

def _cos(u, v):
    return sum(a * b for a, b in zip(u, v, strict=True)) / (math.hypot(*u) * math.hypot(*v))


def test_class_prototypes_gate_and_cali_by_hand():
    model = build(hidden=2, fusion="concat", pali=False, gamma=1.0, beta=0.0)
    with torch.no_grad():
        model.class_gate.w.copy_(t([1, 0, 0, 0]))  # lambda_c = sigma(nu_glo,c[0])
    # three complete rows (classes 0, 0, 1) and an image-only row of class 2
    batch = hand_batch([(True, True)] * 3 + [(True, False)], [0, 0, 1, 2])
    t_img, p_img = t([[1, 0], [3, 0], [0, 2], [7, 7]]), t([[0, 1], [0, 3], [2, 0], [7, 7]])
    t_tab, p_tab = t([[1, 1], [1, 1], [1, -1], [0, 0]]), t([[1, 0], [1, 0], [0, 1], [0, 0]])
    aux = {"t_shared_image": t_img, "p_shared_image": p_img, "t_shared_tabular": t_tab,
           "p_shared_tabular": p_tab}
    has = {"image": batch.present[:, 0], "tabular": batch.present[:, 1]}
    got = model._cali(aux, batch, has, batch.present.all(1))
    # image, class 0: glo = mean([1,0],[3,0]) = [2,0], proto = [0,2]; lambda = sigma(2)
    # image, class 1: glo = [0,2], proto = [2,0]; lambda = sigma(0) = 1/2
    l0 = sig(2.0)
    nu_img = [[2 * l0, 2 * (1 - l0)], [1.0, 1.0]]
    # tabular, class 0: glo = [1,1], proto = [1,0]; lambda = sigma(1); class 1: glo = [1,-1], proto = [0,1]
    l1 = sig(1.0)
    nu_tab = [[1.0, l1], [l1, -l1 + (1 - l1)]]
    # class 2 has no tabular row -> not in the class set C = {0, 1}; the image-only row is not averaged
    per_row = []
    for i in range(3):
        d = [_cos(p_img[i].tolist(), nu_img[c]) - _cos(p_tab[i].tolist(), nu_tab[c]) for c in range(2)]
        per_row.append((d[0] ** 2 + d[1] ** 2) / 2)
    assert got.item() == pytest.approx(sum(per_row) / 3, abs=1e-6)


@pytest.mark.parametrize("mode,lam", [("global", 1.0), ("prototype", 0.0)])
def test_class_prototype_ablation_modes(mode: str, lam: float):
    gate = P.ClassPrototypeGate(2, mode)
    glo, proto = t([[2, 0]]), t([[0, 2]])
    assert torch.allclose(gate(glo, proto), lam * glo + (1 - lam) * proto)


def test_class_means_only_over_present_rows():
    feats = t([[1, 0], [3, 0], [100, 100]])
    targets = t([[1, 0], [1, 0], [1, 0]])
    means, seen = P.class_means(feats, targets, torch.tensor([True, True, False]))
    assert torch.allclose(means[0], t([2, 0])) and seen.tolist() == [True, False]
    assert torch.equal(means[1], t([0, 0]))


# ---- Eq. 9-11 ---------------------------------------------------------------------------------------

def test_fused_shared_each_pattern():
    img, tab = t([[2, 4]] * 4), t([[6, 0]] * 4)
    present = torch.tensor([[True, True], [True, False], [False, True], [False, False]])
    got = P.fuse_shared(img, tab, present)
    assert torch.equal(got, t([[4, 2], [2, 4], [6, 0], [0, 0]]))
    nan = t([[float("nan")] * 2] * 4)  # an absent modality's value is never touched
    assert torch.equal(P.fuse_shared(img, nan, present)[1], t([2, 4]))
    assert torch.equal(P.fuse_shared(nan, tab, present)[2], t([6, 0]))


def test_cma_mask_gives_exactly_zero_attention_to_absent_entries():
    torch.manual_seed(0)
    cma = P.ClassAwareAggregation(dim=4, num_classes=3)
    present = torch.tensor([[True, True], [True, False], [False, True], [False, False]])
    valid = P.h_validity(present)
    h = torch.randn(4, 6, 4)
    logits, attn = cma(h, valid)
    assert attn.shape == (4, 3, 6)
    assert torch.all(attn[1, :, 4:] == 0) and torch.all(attn[2, :, :2] == 0)
    assert torch.allclose(attn[:3].sum(-1), torch.ones(3, 3))
    assert torch.all(attn[3] == 0) and torch.isfinite(logits).all()  # no modality: zero weights, no NaN
    glo = P.h_validity(present, P.SCALE_ROWS["global"])
    _, attn_g = cma(h, glo)
    assert torch.all(attn_g[:, :, [1, 3, 5]] == 0)


def test_cma_attention_by_hand():
    cma = P.ClassAwareAggregation(dim=2, num_classes=1)
    with torch.no_grad():
        for lin in (cma.w_q, cma.w_k, cma.w_v):
            lin.weight.copy_(torch.eye(2))
        cma.class_queries.copy_(t([[1, 0]]))
        cma.classifier.weight.copy_(t([[1, 1]]))
        cma.classifier.bias.zero_()
    h = t([[[1, 0], [0, 1], [2, 0], [0, 0], [3, 3], [1, 1]]])
    valid = torch.tensor([[True, True, True, True, False, False]])  # image-only row
    logits, attn = cma(h, valid)
    s = [1 / math.sqrt(2), 0.0, 2 / math.sqrt(2), 0.0]  # q . k_j / sqrt(D) on the valid rows
    z = sum(math.exp(v) for v in s)
    want = [math.exp(v) / z for v in s] + [0.0, 0.0]
    assert torch.allclose(attn[0, 0], t(want), atol=1e-6)
    zvec = [want[0] * 1 + want[2] * 2, want[1] * 1]  # Z = sum_j a_j v_j
    assert logits.item() == pytest.approx(zvec[0] + zvec[1], abs=1e-6)


def test_forward_exposes_attention_for_saving():
    model = build()
    out = model(make_batch(MIXED))
    attn = out.aux["cma_attention"]
    assert attn.shape == (len(MIXED), 8, 6)
    image_only = [i for i, p in enumerate(MIXED) if p == "image_only"]
    tab_only = [i for i, p in enumerate(MIXED) if p == "tabular_only"]
    assert torch.all(attn[image_only][:, :, 4:] == 0) and torch.all(attn[tab_only][:, :, :2] == 0)
    assert build(fusion="concat").save_aux == ()


# ---- the loss dict, ablations, configs -------------------------------------------------------------

FULL_TERMS = {"task", "tdis", "tali", "div", "pdis", "pali_shared", "pali_spec", "cali"}


@pytest.mark.parametrize("kw,terms", [
    ({}, FULL_TERMS),
    ({"sspm": False, "pfa": False, "fusion": "concat"}, {"task", "tdis", "tali"}),
    ({"pfa": False, "fusion": "concat"}, {"task", "tdis", "tali", "div", "pdis"}),
    ({"diversity": False, "pfa": False}, {"task", "tdis", "tali", "pdis"}),
    ({"cali": False}, FULL_TERMS - {"cali"}),
    ({"pali": False}, FULL_TERMS - {"pali_shared", "pali_spec"}),
])
def test_loss_terms_per_ablation(kw: dict, terms: set[str]):
    model = build(**kw)
    batch = make_batch(MIXED)
    out = model(batch)
    got = model.losses(batch, out)
    assert set(got) == terms
    assert all(torch.isfinite(v) for v in got.values())


def test_weights_enter_the_terms():
    batch = make_batch(MIXED)
    model = build(seed=3)
    out = model(batch)
    base = model.losses(batch, out)
    model.cfg = dataclasses.replace(model.cfg, alpha=2.0, beta=0.3, gamma=0.5)
    scaled = model.losses(batch, out)
    for k, w in [("tdis", 2.0), ("tali", 2.0), ("div", 3.0), ("pdis", 3.0), ("pali_shared", 5.0),
                 ("pali_spec", 5.0), ("cali", 5.0)]:
        assert scaled[k].item() == pytest.approx(w * base[k].item(), rel=1e-4), k
    assert scaled["task"].item() == base["task"].item()


def test_config_validation():
    with pytest.raises(ConfigError, match="pfa"):
        DFPLConfig(sspm=False)
    with pytest.raises(ConfigError, match="prototype"):
        DFPLConfig(sspm=False, pfa=False, scale="prototype")
    with pytest.raises(ConfigError, match="num_prototypes: must be >= 1, got 0"):
        validate(DFPLConfig, {"num_prototypes": 0}, "dfpl")
    assert DFPLConfig(sspm=False, pfa=False).rows() == P.SCALE_ROWS["global"]


def test_yaml_defaults_are_the_paper_values():
    mc = load_method("dfpl")
    assert mc.impl == "dfpl"
    p = mc.params
    assert (p["alpha"], p["beta"], p["gamma"], p["delta"], p["num_prototypes"], p["ot_epsilon"]) == \
        (1.0, 0.1, 0.1, 0.2, 5, 0.1)
    assert set(p) == {f.name for f in dataclasses.fields(DFPLConfig)}
    assert DFPLConfig(**p) == DFPLConfig()


DFPL_VARIANTS = [n for n in list_names("methods") if n == "dfpl" or n.startswith("dfpl-")]


def test_ablation_protocol_lists_every_paper_variant():
    proto = load_protocol("dfpl-ablations")
    # options, not paper rows: the OT cost scale, the literal reading and where the two encoders split
    assert set(proto.methods) == set(DFPL_VARIANTS) - {"dfpl-normcost", "dfpl-stemshared", "dfpl-literal"}
    assert proto.scenarios == ["both"] and proto.rates == [0.5] and proto.seeds == [0, 1, 2]


@pytest.mark.parametrize("name", DFPL_VARIANTS)
def test_every_variant_builds_trains_and_masks(name: str):
    mc = load_method(name)
    assert mc.impl == "dfpl"
    torch.manual_seed(0)
    model = DFPL(tiny_ctx(), DFPLConfig(**mc.params))
    batch = make_batch(["complete", "image_only", "tabular_only", "complete"])
    out = model(batch)
    terms = model.losses(batch, out)
    sum(terms.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---- degenerate batches and leakage -----------------------------------------------------------------

@pytest.mark.parametrize("patterns", [
    ["image_only", "tabular_only", "image_only", "tabular_only"],  # no complete pair
    ["complete", "complete", "complete"],                           # one pattern only
    ["tabular_only"] * 3,
    ["complete", "image_only"],
], ids=["no-complete-pair", "all-complete", "all-tabular-only", "two-rows"])
def test_no_nan_on_degenerate_batches(patterns: list[str]):
    model = build()
    batch = make_batch(patterns, offset=5)  # rows 5.. hold distinct labels: classes with one sample
    assert len(set(batch.y.tolist())) >= len(patterns) - 1
    out = model(batch)
    terms = model.losses(batch, out)
    assert all(torch.isfinite(v) for v in terms.values()), terms
    sum(terms.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_no_modality_row_gives_finite_outputs():
    model = build()
    batch = make_batch(["complete", "image_only"]).with_present(torch.tensor([[True, True], [False, False]]))
    out = model(batch)
    assert torch.isfinite(out.logits).all() and torch.all(out.aux["cma_attention"][1] == 0)
    sum(model.losses(batch, out).values()).backward()


def _garbage(batch: Batch) -> Batch:
    gen = torch.Generator().manual_seed(5)
    inputs = {}
    for j, m in enumerate(MODALITIES):
        absent = ~batch.present[:, j]
        parts = {}
        for k, x in batch.inputs[m].items():
            noise = (torch.randn(x.shape, generator=gen) * 9).to(x.dtype) if x.is_floating_point() \
                else torch.randint(0, 3, x.shape, generator=gen)
            parts[k] = torch.where(absent.view((-1,) + (1,) * (x.dim() - 1)), noise, x)
        inputs[m] = parts
    return dataclasses.replace(batch, inputs=inputs)


def test_absent_data_cannot_leak_even_in_train_mode():
    """Absent inputs are re-zeroed before the encoders, so even BatchNorm batch statistics ignore them."""
    model = build().train()
    batch = make_batch(MIXED)
    torch.manual_seed(0)
    ref = model(batch)
    torch.manual_seed(0)
    alt = model(_garbage(batch))
    assert torch.equal(ref.logits, alt.logits)
    assert torch.equal(ref.aux["cma_attention"], alt.aux["cma_attention"])
    for m in MODALITIES:
        assert torch.equal(ref.embeddings[m], alt.embeddings[m])


# ---- a short run learns -----------------------------------------------------------------------------

def test_short_training_run_learns():
    """A few Adam steps on one small batch bring the classification loss well down."""
    torch.manual_seed(0)
    model = build(hidden=16).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = make_batch(MIXED, offset=10)
    losses = []
    for _ in range(12):
        out = model(batch)
        terms = model.losses(batch, out)
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
        losses.append(terms["task"].item())
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses


# ---- the step-time benchmark (mmbench bench) ------------------------------------------------------------

def test_step_time_benchmark_runs(tmp_path, monkeypatch):
    from mmbench.bench import run_bench

    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path))
    res = run_bench(["dfpl"], "synthetic-tiny", overrides={"train.batch_size": 4, "data.n_samples": 96}, rounds=1,
                    steps=1, warmup=1, log=lambda m: None)
    lf, dfpl = res["methods"]
    assert lf["method"] == "late_fusion" and lf["ratio"] == 1.0
    assert dfpl["method"] == "dfpl" and dfpl["ratio"] > 0 and dfpl["frozen"]["speedup"] > 0

"""DPL head: cosine logits per case (Eq. 5-7), ArcFace (Eq. 8-11), SupCon (Eq. 12), checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.data.base import DataInfo
from mmbench.data.batch import Batch, Output
from mmbench.errors import ConfigError
from mmbench.heads.dpl import DPLConfig, DPLHead, arcface_logits, case_index, supcon
from mmbench.models.base import BuildContext
from mmbench.registry import HEADS

R2 = 1 / math.sqrt(2)
COMPLETE, IMG_ONLY, TAB_ONLY, NONE = (True, True), (True, False), (False, True), (False, False)

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscribing a shared CPU (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



def make_head(K: int = 2, D: int = 2, task: str = "multiclass", **cfg: object) -> DPLHead:
    info = DataInfo(name="toy", task=task, num_classes=K, image_shape=(3, 8, 8))
    return DPLHead(BuildContext(info, hidden=D), {"image": D, "tabular": D}, DPLConfig(**cfg))


def make_batch(present: list[tuple[bool, bool]], y: list) -> Batch:
    n = len(present)
    return Batch(inputs={}, present=torch.tensor(present), y=torch.tensor(y), index=torch.arange(n))


def set_protos(head: DPLHead, **values: list[list[float]]) -> None:
    with torch.no_grad():
        for name, v in values.items():
            head.prototypes[name].copy_(torch.tensor(v))


def toy_head() -> DPLHead:
    head = make_head()
    # rows = classes; the head L2-normalises each component itself
    set_protos(head,
               complete_image=[[1.0, 0.0], [0.0, 2.0]],       # -> [1,0], [0,1]
               complete_tabular=[[0.0, 3.0], [1.0, 1.0]],     # -> [0,1], [1/r2, 1/r2]
               image_only_image=[[1.0, 1.0], [1.0, -1.0]],    # -> [r2, r2], [r2, -r2]
               tabular_only_tabular=[[-1.0, 0.0], [0.0, 1.0]])  # -> [-1,0], [0,1]
    return head


def test_registered() -> None:
    assert HEADS.get("dpl") is DPLHead


def test_case_index() -> None:
    present = torch.tensor([COMPLETE, IMG_ONLY, TAB_ONLY, NONE])
    assert case_index(present).tolist() == [0, 1, 2, -1]


def test_cosine_logits_each_case_by_hand() -> None:
    head = toy_head()
    emb = {"image": torch.tensor([[3.0, 4.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0]]),
           "tabular": torch.tensor([[0.0, 2.0], [5.0, 5.0], [0.0, 2.0], [7.0, 1.0]])}
    batch = make_batch([COMPLETE, IMG_ONLY, TAB_ONLY, NONE], [0, 0, 0, 0])
    z = head(Output(logits=torch.zeros(4, 2), embeddings=emb), batch)
    # complete (Eq. 5): h_I/|h_I| = [0.6, 0.8], h_T/|h_T| = [0, 1]
    #   class 0: (0.6*1 + 0.8*0 + 0*0 + 1*1) / 2 = 0.8
    #   class 1: (0.6*0 + 0.8*1 + 0*r2 + 1*r2) / 2 = (0.8 + 0.70711) / 2
    # image-only (Eq. 6): [0.6, 0.8] . [r2, r2] = 1.4 r2 ; . [r2, -r2] = -0.2 r2 (tabular ignored)
    # tabular-only (Eq. 7): [0, 1] . [-1, 0] = 0 ; . [0, 1] = 1 (image ignored)
    # nothing present: 0
    expected = torch.tensor([[0.8, (0.8 + R2) / 2], [1.4 * R2, -0.2 * R2], [0.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(z, expected)


def test_absent_embedding_never_reaches_logits() -> None:
    head = toy_head()
    batch = make_batch([IMG_ONLY, TAB_ONLY], [0, 1])
    emb = {"image": torch.tensor([[3.0, 4.0], [1.0, 2.0]]), "tabular": torch.tensor([[1.0, 2.0], [0.0, 2.0]])}
    z1 = head(Output(logits=torch.zeros(2, 2), embeddings=emb), batch)
    emb2 = {"image": torch.tensor([[3.0, 4.0], [float("nan"), float("inf")]]),
            "tabular": torch.tensor([[4.0, -1.0], [0.0, 2.0]])}
    z2 = head(Output(logits=torch.zeros(2, 2), embeddings=emb2), batch)
    assert torch.equal(z1, z2)


def test_undecomposed_cosine_by_hand() -> None:
    head = make_head(decomposed=False)
    set_protos(head, complete=[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]],
               image_only=[[1.0, 0.0], [0.0, 1.0]], tabular_only=[[1.0, 0.0], [0.0, 1.0]])
    emb = {"image": torch.tensor([[3.0, 4.0], [3.0, 4.0]]), "tabular": torch.tensor([[0.0, 2.0], [0.0, 2.0]])}
    z = head(Output(logits=torch.zeros(2, 2), embeddings=emb), make_batch([COMPLETE, IMG_ONLY], [0, 0]))
    # complete: cosine of the whole [3, 4, 0, 2] (norm sqrt(29)) with [1,0,0,0] and [0,0,0,1]
    # image-only: the tabular half is 0, so [0.6, 0.8] against [1, 0] and [0, 1]
    s29 = math.sqrt(29.0)
    torch.testing.assert_close(z, torch.tensor([[3 / s29, 2 / s29], [0.6, 0.8]]))


def test_arcface_both_branches_by_hand() -> None:
    m = 0.1
    cos = torch.tensor([[0.6, 0.2, -0.999], [0.3, -0.999, 0.5]])
    target = torch.tensor([[True, False, False], [False, True, False]])
    out = arcface_logits(cos, target, torch.tensor([[2.0], [3.0]]), torch.tensor([[m], [m]]))
    # branch 1 (cos > cos(pi - m) = -0.99500): cos(theta + m) = cos cos(m) - sin(theta) sin(m), sin = 0.8
    phi_06 = 0.6 * math.cos(0.1) - 0.8 * math.sin(0.1)  # = 0.517136
    # branch 2 (cos = -0.999 <= -0.99500): cos - m sin(pi - m) = -0.999 - 0.1 * sin(0.1)
    phi_neg = -0.999 - 0.1 * math.sin(0.1)  # = -1.008983
    assert abs(phi_06 - 0.517136) < 1e-6 and abs(phi_neg + 1.008983) < 1e-6
    expected = torch.tensor([[2 * phi_06, 2 * 0.2, 2 * -0.999], [3 * 0.3, 3 * phi_neg, 3 * 0.5]])
    torch.testing.assert_close(out, expected)


def test_arcface_no_nan_at_unit_cosine() -> None:
    cos = torch.tensor([[1.0, -1.0], [1.0000001, -1.0000001]], requires_grad=True)
    target = torch.tensor([[True, False], [False, True]])
    out = arcface_logits(cos, target, torch.full((2, 1), 32.0), torch.full((2, 1), 0.15))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(cos.grad).all()


def test_multiclass_arcface_loss_per_case_by_hand() -> None:
    head = make_head(s_complete=2.0, m_complete=0.1, s_image_only=4.0, m_image_only=0.15, supcon_weight=0.0)
    batch = make_batch([COMPLETE, IMG_ONLY, NONE], [0, 1, 0])
    out = Output(logits=torch.tensor([[0.6, 0.2], [0.2, 0.6], [0.9, 0.1]]))
    terms = head.losses(batch, out)
    assert set(terms) == {"arcface"}  # lambda = 0: the ArcFace-only ablation (Table 2)
    # row 0, complete (s=2, m=0.1): logits [2*0.517136, 2*0.2] = [1.034271, 0.4]
    #   CE = log(1 + exp(0.4 - 1.034272)) = log(1.530316) = 0.425478
    row0 = math.log(1 + math.exp(0.4 - 2 * (0.6 * math.cos(0.1) - 0.8 * math.sin(0.1))))
    # row 1, image-only (s=4, m=0.15), target class 1 with cos 0.6:
    #   phi = 0.6 cos(0.15) - 0.8 sin(0.15) = 0.473712; logits [0.8, 1.894849]; CE = 0.288624
    row1 = math.log(1 + math.exp(4 * 0.2 - 4 * (0.6 * math.cos(0.15) - 0.8 * math.sin(0.15))))
    assert abs(row0 - 0.425478) < 1e-5 and abs(row1 - 0.288624) < 1e-5
    # row 2 has no modality: excluded from the mean
    torch.testing.assert_close(terms["arcface"], torch.tensor((row0 + row1) / 2))


def test_multilabel_arcface_margin_on_every_positive_by_hand() -> None:
    head = make_head(K=3, task="multilabel", s_complete=2.0, m_complete=0.1, supcon_weight=0.0)
    batch = make_batch([COMPLETE], [[1.0, 0.0, 1.0]])
    out = Output(logits=torch.tensor([[0.6, 0.3, -0.999]]))
    # Eq. 11: positives get the margin (both branches here), the negative keeps s*cos
    z = [2 * (0.6 * math.cos(0.1) - 0.8 * math.sin(0.1)), 2 * 0.3, 2 * (-0.999 - 0.1 * math.sin(0.1))]
    # Eq. 10 per label: -log sigma(z) for positives, -log(1 - sigma(z)) for the negative
    bce = [math.log(1 + math.exp(-z[0])), math.log(1 + math.exp(z[1])), math.log(1 + math.exp(-z[2]))]
    # = 0.304160 + 1.037488 + 2.142770
    assert abs(sum(bce) - 3.484417) < 1e-5
    mean = head.losses(batch, out)["arcface"]
    torch.testing.assert_close(mean, torch.tensor(sum(bce) / 3))  # official: mean over labels
    head_sum = make_head(K=3, task="multilabel", s_complete=2.0, m_complete=0.1, supcon_weight=0.0,
                         multilabel_reduction="sum")
    torch.testing.assert_close(head_sum.losses(batch, out)["arcface"], torch.tensor(sum(bce)))  # Eq. 10


def test_supcon_two_views_by_hand() -> None:
    # class 0 views a1=[1,0], a2=[0,1]; class 1 views b1=[-1,0], b2=[0,-1]; tau = 1
    views = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]])
    # anchor a1: positive a2 (dot 0); denominator a2 (0), b1 (-1), b2 (0) -> -log(e^0 / (2 + e^-1))
    # every anchor is alike by symmetry
    per_anchor = math.log(2 + math.exp(-1))  # 0.861995
    torch.testing.assert_close(supcon(views, 1.0), torch.tensor(per_anchor))
    # Eq. 12 as printed: the plain sum over 4 anchors x 1 positive
    torch.testing.assert_close(supcon(views, 1.0, reduction="sum"), torch.tensor(4 * per_anchor))
    # tau = 0.5, base tau = 1: dots doubled, result scaled by tau / base tau
    half = 0.5 * math.log(2 + math.exp(-2))
    torch.testing.assert_close(supcon(views, 0.5, 1.0), torch.tensor(half))


def test_supcon_three_views_by_hand_and_inactive_views() -> None:
    # class 0: a1=[1,0], a2=[0,1], a3=[1,0]; class 1 the negatives of those
    views = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [[-1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]]])
    e = math.e
    # anchor a1: others a2 0, a3 1, b1 -1, b2 0, b3 -1 -> den = 2 + e + 2/e; positives a2 (0), a3 (1)
    l_a1 = -((0 - math.log(2 + e + 2 / e)) + (1 - math.log(2 + e + 2 / e))) / 2  # 1.196357
    # anchor a2: others a1 0, a3 0, b1 0, b2 -1, b3 0 -> den = 4 + 1/e; positives a1, a3 (0 each)
    l_a2 = math.log(4 + 1 / e)  # 1.474279
    expected = (2 * l_a1 + l_a2) / 3  # a3 = a1; class 1 mirrors class 0
    assert abs(expected - 1.288998) < 1e-5
    torch.testing.assert_close(supcon(views, 1.0), torch.tensor(expected))
    # an inactive view takes no part at all: same as dropping it
    active = torch.tensor([True, True, False])
    torch.testing.assert_close(supcon(views, 1.0, active=active), torch.tensor(math.log(2 + math.exp(-1))))


def test_head_supcon_uses_components_of_seen_cases() -> None:
    head = toy_head()
    out = Output(logits=torch.zeros(2, 2))
    head.train()
    # complete + image-only rows: views (image, complete), (image, image-only), (tabular, complete)
    terms = head.losses(make_batch([COMPLETE, IMG_ONLY], [0, 1]), out)
    views, _ = head.prototype_views()
    expected = 0.9 * supcon(views[:, [0, 1, 2]], 1.0)
    torch.testing.assert_close(terms["supcon"], expected)
    assert head.cases_seen.tolist() == [True, True, False]
    # later a tabular-only batch: every component takes part from now on
    terms = head.losses(make_batch([TAB_ONLY, TAB_ONLY], [0, 1]), out)
    torch.testing.assert_close(terms["supcon"], 0.9 * supcon(views, 1.0))


def test_backward_and_degenerate_batches() -> None:
    torch.manual_seed(0)
    head = make_head(K=3, D=4)
    head.train()
    for present in ([COMPLETE] * 3, [IMG_ONLY] * 3, [TAB_ONLY, TAB_ONLY, NONE], [NONE] * 3,
                    [COMPLETE, IMG_ONLY, TAB_ONLY]):
        emb = {m: torch.randn(3, 4, requires_grad=True) for m in ("image", "tabular")}
        batch = make_batch(list(present), [0, 1, 2])
        out = Output(logits=torch.zeros(3, 3), embeddings=emb)
        out.logits = head(out, batch)
        terms = head.losses(batch, out)
        total = sum(terms.values())
        total.backward()
        assert torch.isfinite(total)
        assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
        assert all(torch.isfinite(t.grad).all() for t in emb.values() if t.grad is not None)


def test_config_errors() -> None:
    info = DataInfo(name="toy", task="multiclass", num_classes=2, image_shape=(3, 8, 8))
    ctx = BuildContext(info, hidden=4)
    with pytest.raises(ConfigError, match="needs a pooled embedding per modality"):
        DPLHead(ctx, {"image": 4}, DPLConfig())
    with pytest.raises(ConfigError, match="equal embedding widths"):
        DPLHead(ctx, {"image": 4, "tabular": 8}, DPLConfig())
    DPLHead(ctx, {"image": 4, "tabular": 8}, DPLConfig(supcon_weight=0.0))  # fine without SupCon
    DPLHead(ctx, {"image": 4, "tabular": 8}, DPLConfig(decomposed=False))  # whole-vector views
    with pytest.raises(ValueError, match="m_complete"):
        DPLConfig(m_complete=2.0)


def test_supcon_and_arcface_compute_in_the_input_dtype():
    """float64 in, float64 out (``gradcheck`` passes); float32 and half precision give float32."""
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    active = torch.tensor([True, True, False, True])

    def loss(r: torch.Tensor, reduction: str) -> torch.Tensor:
        return supcon(torch.nn.functional.normalize(r, dim=-1), 0.5, 1.0, reduction, active)

    for reduction in ("mean", "sum"):
        assert loss(raw, reduction).dtype == torch.float64
        assert torch.autograd.gradcheck(lambda r, red=reduction: loss(r, red), (raw,))
    # cosines on both sides of the non-easy margin switch (cos(pi - m) = -0.995 for m = 0.1)
    cos = torch.tensor([[0.3, -0.999], [0.8, -0.2]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[True, True], [False, True]])
    s, m = torch.full((2, 1), 16.0, dtype=torch.float64), torch.full((2, 1), 0.1, dtype=torch.float64)
    assert arcface_logits(cos, target, s, m).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda c: arcface_logits(c, target, s, m), (cos,))
    views32 = torch.nn.functional.normalize(raw.detach(), dim=-1).float()
    assert supcon(views32, 0.5).dtype == torch.float32
    assert supcon(views32, 0.5).item() == pytest.approx(supcon(views32.double(), 0.5).item(), rel=1e-5)
    assert supcon(views32.bfloat16(), 0.5).dtype == torch.float32
    assert arcface_logits(cos.detach().half(), target, s.float(), m.float()).dtype == torch.float32

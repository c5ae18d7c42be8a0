"""MCE balancer: Shapley values, a_m, b_m, subset enumeration and the normalisation of every term."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
import torch
from torch import Tensor

from mmbench.balancers.mce import MCEBalancer, MCEConfig, subset_rows
from mmbench.data.base import DataInfo
from mmbench.data.batch import Batch, Output
from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions
from mmbench.encoders.config import EncodersConfig, TabularEncoderConfig
from mmbench.heads.native import NativeHead
from mmbench.models.base import BuildContext, Method, NoConfig
from mmbench.models.late_fusion import LateFusion, LateFusionConfig
from mmbench.pipeline import Pipeline
from mmbench.protocols import MissingSpec, simulate_presence
from mmbench.registry import BALANCERS, HEADS
from mmbench.shapley import shapley_values

CPL, IMG, TAB, NONE = (True, True), (True, False), (False, True), (False, False)

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscribing a shared CPU (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



# ------------------------------------------------------------------------------- Shapley values
def test_shapley_three_players_textbook_by_hand() -> None:
    # players A, B, C = bits 0, 1, 2; v indexed by bitmask
    v = [0, 1, 2, 4, 0, 2, 3, 6]  # v(A)=1 v(B)=2 v(AB)=4 v(C)=0 v(AC)=2 v(BC)=3 v(ABC)=6
    # phi_A = 1/3 [v(A)-0] + 1/6 [v(AB)-v(B)] + 1/6 [v(AC)-v(C)] + 1/3 [v(ABC)-v(BC)]
    #       = 1/3 + 2/6 + 2/6 + 3/3 = 2
    # phi_B = 2/3 + 3/6 + 3/6 + 4/3 = 3 ;  phi_C = 0 + 1/6 + 1/6 + 2/3 = 1  (sum = v(ABC) = 6)
    assert shapley_values(v, 3) == pytest.approx([2.0, 3.0, 1.0])


def test_shapley_three_players_official_variant_by_hand() -> None:
    v = [0, 1, 2, 4, 0, 2, 3, 6]
    # phi_i = sum_{S contains i, |S|>=2} (|S|-1)!(3-|S|)!/3! (v(S) - v({i})) + v({i}) / 3
    # phi_A = 1/6 (4-1) + 1/6 (2-1) + 2/6 (6-1) + 1/3 = 0.5 + 1/6 + 5/3 + 1/3 = 8/3
    # phi_B = 1/6 (4-2) + 1/6 (3-2) + 2/6 (6-2) + 2/3 = 1/3 + 1/6 + 4/3 + 2/3 = 5/2
    # phi_C = 1/6 (2-0) + 1/6 (3-0) + 2/6 (6-0) + 0 = 1/3 + 1/2 + 2 = 17/6
    assert shapley_values(v, 3, variant="mce_official") == pytest.approx([8 / 3, 5 / 2, 17 / 6])


def test_shapley_inactive_player_and_two_players() -> None:
    v = [0, 1, 2, 4, 0, 2, 3, 6]
    # only A and B active (C absent from the batch): phi_A = 1/2 v(A) + 1/2 (v(AB) - v(B)) = 1.5
    # phi_B = 1/2 v(B) + 1/2 (v(AB) - v(A)) = 2.5; phi_C = 0
    assert shapley_values(v, 3, players=0b011) == pytest.approx([1.5, 2.5, 0.0])
    # one active player takes the whole value of its singleton
    assert shapley_values([0, 5, 7, 9], 2, players=0b01) == pytest.approx([5.0, 0.0])
    # two players, official variant: phi_i = 1/2 (v(12) - v(i)) + v(i)/2 = v(12)/2 for both
    assert shapley_values([0, 5, 7, 9], 2, variant="mce_official") == pytest.approx([4.5, 4.5])


def test_shapley_avmnist_rule_by_hand() -> None:
    # the official AV-MNIST script: L = 2^n - 1 (3 for two modalities) and S over every coalition
    # two players: phi_i = (|S|-1)!(L-|S|)!/L! (v(12) - v(i)) + v(i)/L = (v(12) - v(i))/6 + v(i)/3
    #            = (v(12) + v(i)) / 6 -> (9 + 5)/6 and (9 + 7)/6: the two modalities now differ
    assert shapley_values([0, 5, 7, 9], 2, variant="mce_avmnist") == pytest.approx([14 / 6, 16 / 6])
    # the IEMOCAP rule (L = players present) on the same v gives both v(12)/2 = 4.5
    assert shapley_values([0, 5, 7, 9], 2, variant="mce_official") == pytest.approx([4.5, 4.5])
    # player 2 absent from the batch (so v(12) = 0): phi_1 = (0 - 5)/6 + 5/3 = 5/6, phi_2 = 0
    assert shapley_values([0, 5, 0, 0], 2, players=0b01, variant="mce_avmnist") == pytest.approx([5 / 6, 0.0])
    # three players: L = 7, weights 1!5!/7! = 1/42 (|S| = 2) and 2!4!/7! = 1/105 (|S| = 3)
    # phi_A = (4-1)/42 + (2-1)/42 + (6-1)/105 + 1/7 = 2/21 + 1/21 + 3/21 = 2/7
    # phi_B = (4-2)/42 + (3-2)/42 + (6-2)/105 + 2/7 = 1/14 + 4/105 + 2/7
    # phi_C = (2-0)/42 + (3-0)/42 + (6-0)/105 + 0 = 5/42 + 2/35
    v = [0, 1, 2, 4, 0, 2, 3, 6]
    expected = [2 / 7, 1 / 14 + 4 / 105 + 2 / 7, 5 / 42 + 2 / 35]
    assert shapley_values(v, 3, variant="mce_avmnist") == pytest.approx(expected)


# ------------------------------------------------------------------------------- subset enumeration
def test_subset_enumeration_and_normalisation_two_modalities() -> None:
    present = torch.tensor([CPL, IMG, TAB, CPL, NONE])
    rows, subs, weight = subset_rows(present)
    # complete rows 0 and 3 get {image} (bitmask 1) and {tabular} (bitmask 2); single-modality rows
    # have no non-empty proper subset; weights 1 / (2^2 - 1) = 1/3
    assert rows.tolist() == [0, 3, 0, 3]
    assert subs.tolist() == [1, 1, 2, 2]
    torch.testing.assert_close(weight, torch.full((4,), 1 / 3))


def test_subset_enumeration_three_modalities() -> None:
    present = torch.tensor([[True, True, True], [True, False, True], [False, True, False]])
    rows, subs, weight = subset_rows(present)
    pairs = sorted(zip(rows.tolist(), subs.tolist(), weight.tolist(), strict=True))
    # row 0 (all three, 2^3 - 1 = 7): the 6 proper subsets {1},{2},{3},{12},{13},{23} -> 1,2,4,3,5,6
    # row 1 ({1,3} = bitmask 5, 2^2 - 1 = 3): {1} -> 1 and {3} -> 4; row 2 (single): none
    expected = sorted([(0, s, 1 / 7) for s in (1, 2, 3, 4, 5, 6)] + [(1, 1, 1 / 3), (1, 4, 1 / 3)])
    assert [(r, s) for r, s, _ in pairs] == [(r, s) for r, s, _ in expected]
    assert [w for *_, w in pairs] == pytest.approx([w for *_, w in expected])


# ------------------------------------------------------------------------------- a_m and b_m
@dataclass
class StubLoader:
    """The attributes MCE's ``setup`` reads from a training loader."""

    split: object
    present: Tensor
    batch_size: int = 4
    device: torch.device = torch.device("cpu")


def toy_info(K: int = 3) -> DataInfo:
    return DataInfo(name="toy", task="multiclass", num_classes=K, image_shape=(3, 8, 8))


def test_dataset_level_factor_a() -> None:
    # 10 rows: 6 complete, 3 image-only, 1 tabular-only -> N = 10, N_image = 9, N_tabular = 7
    present = torch.tensor([CPL] * 6 + [IMG] * 3 + [TAB])
    bal = MCEBalancer(BuildContext(toy_info(), hidden=2), {"image": 2, "tabular": 2}, MCEConfig(use_b=False))
    bal.setup(None, {"train": StubLoader(split=None, present=present)})  # type: ignore[arg-type]
    torch.testing.assert_close(bal.a, torch.tensor([10 / 9, 10 / 7]))


def toy_batch(present: list[tuple[bool, bool]], y: list[int] | None = None) -> Batch:
    n = len(present)
    return Batch(inputs={}, present=torch.tensor(present), y=torch.tensor(y or [0] * n),
                 index=torch.arange(n))


@pytest.mark.parametrize("variant, expected_b", [
    # textbook: v(I)=2, v(T)=1, v(IT)=1 -> phi_I = 1/2*2 + 1/2*(1-1) = 1, phi_T = 1/2*1 + 1/2*(1-2) = 0
    #   c_I = 2, c_T = 3, n_I = n_T = 3 -> b_I = (2-1)/3, b_T = (3-0)/3
    ("textbook", [1 / 3, 1.0]),
    # official, IEMOCAP rule: phi_I = phi_T = v(IT)/2 = 0.5 -> b_I = 1.5/3, b_T = 2.5/3
    ("mce_official", [0.5, 2.5 / 3]),
    # official, AV-MNIST rule: phi_I = (v(IT) + v(I))/6 = 0.5, phi_T = (1 + 1)/6 = 1/3
    #   -> b_I = (2 - 0.5)/3 = 0.5, b_T = (3 - 1/3)/3 = 8/9
    ("mce_avmnist", [0.5, 8 / 9]),
])
def test_batch_level_factor_b_by_hand(variant: str, expected_b: list[float]) -> None:
    bal = MCEBalancer(BuildContext(toy_info(), hidden=2), {"image": 2, "tabular": 2},
                      MCEConfig(use_b=False, shapley=variant))  # type: ignore[arg-type]
    batch = toy_batch([CPL, CPL, IMG, TAB])
    main_correct = torch.tensor([1.0, 0.0, 1.0, 1.0])  # row 0 complete right, row 1 wrong, singles right
    # subset forwards: row 0 image-only right, row 1 image-only wrong, row 0 tabular-only wrong, row 1 wrong
    sub_pattern = torch.tensor([1, 1, 2, 2])
    sub_correct = torch.tensor([1.0, 0.0, 0.0, 0.0])
    # v({I}) = row 2 main (1) + row 0 subset (1) + row 1 subset (0) = 2
    # v({T}) = row 3 main (1) + 0 + 0 = 1 ; v({I,T}) = row 0 (1) + row 1 (0) = 1
    reference = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])  # c_I = 2, c_T = 3
    b, _ = bal.factors(batch, main_correct, sub_pattern, sub_correct, reference)
    torch.testing.assert_close(b, torch.tensor(expected_b))


def test_factor_b_modality_absent_from_whole_batch() -> None:
    bal = MCEBalancer(BuildContext(toy_info(), hidden=2), {"image": 2, "tabular": 2}, MCEConfig(use_b=False))
    batch = toy_batch([IMG, IMG, IMG])
    # only the image plays: phi_I = v({I}) = 2 correct; c_I = 3 -> b_I = (3 - 2) / 3; b_T = 0, no crash
    b, phi = bal.factors(batch, torch.tensor([1.0, 1.0, 0.0]), torch.zeros(0, dtype=torch.long),
                         torch.zeros(0), torch.tensor([[1.0, 0.0]] * 3))
    torch.testing.assert_close(phi, torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(b, torch.tensor([1 / 3, 0.0]))


# ------------------------------------------------------------------------------- term normalisation
class ToyMethod(Method):
    """Embeddings = the raw 2-d inputs (zero where absent); constant zero logits (CE = log K)."""

    Config = NoConfig

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__(ctx, NoConfig())
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen: list[Batch] = []

    def forward(self, batch: Batch) -> Output:
        self.seen.append(batch)
        emb = {m: batch.inputs[m]["x"] * self.scale * batch.present[:, j : j + 1].float()
               for j, m in enumerate(("image", "tabular"))}
        logits = torch.zeros(len(batch), self.num_classes) * self.scale
        return Output(logits=logits, embeddings=emb)

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        return {"task": out.logits.sum() * 0}


def test_every_term_normalised_by_hand() -> None:
    K = 3
    ctx = BuildContext(toy_info(K), hidden=2)
    method = ToyMethod(ctx)
    bal = MCEBalancer(ctx, {"image": 2, "tabular": 2}, MCEConfig(use_a=False, use_b=False))
    with torch.no_grad():  # zero last layers: completions predict 0, unimodal logits are 0
        for mod in ("image", "tabular"):
            bal.completion[mod][-1].weight.zero_()
            bal.completion[mod][-1].bias.zero_()
            bal.unimodal[mod][-1].weight.zero_()
            bal.unimodal[mod][-1].bias.zero_()
    pipe = Pipeline(method, NativeHead(ctx, {}, NoConfig()), bal)
    present = torch.tensor([CPL, IMG, TAB, CPL])
    bal.setup(pipe, {"train": StubLoader(split=None, present=present)})  # type: ignore[arg-type]
    img = torch.tensor([[1.0, -3.0], [2.0, 2.0], [9.0, 9.0], [0.5, 0.5]])
    tab = torch.tensor([[4.0, 0.0], [7.0, 7.0], [1.0, 1.0], [-2.0, 2.0]])
    batch = Batch(inputs={"image": {"x": img}, "tabular": {"x": tab}}, present=present,
                  y=torch.tensor([0, 1, 2, 0]), index=torch.arange(4)).with_present(present)
    pipe.train()
    out = pipe(batch)
    terms = pipe.loss_terms(batch, out)
    # the subset forward saw rows 0, 3 with the image only, then rows 0, 3 with the table only
    sub = method.seen[-1]
    assert sub.present.tolist() == [[True, False], [True, False], [False, True], [False, True]]
    assert torch.equal(sub.inputs["image"]["x"], torch.tensor([[1.0, -3.0], [0.5, 0.5], [0, 0], [0, 0]]))
    n_any = 4
    # L_sub = 1/N_any * sum_i 1/(2^|A_i|-1) sum_S CE: 4 subset rows, each CE = log 3, weight 1/3
    torch.testing.assert_close(terms["mce_sub"], torch.tensor(2.0 * 4 * math.log(3) / 3 / n_any))
    # L_rec image: rows 0, 3 under {tabular}; L1 mean |h_I - 0| = (1+3)/2 = 2 and 0.5
    torch.testing.assert_close(terms["mce_rec_image"], torch.tensor((2.0 + 0.5) / 3 / n_any))
    # L_rec tabular: rows 0, 3 under {image}; (4+0)/2 = 2 and (2+2)/2 = 2
    torch.testing.assert_close(terms["mce_rec_tabular"], torch.tensor((2.0 + 2.0) / 3 / n_any))
    # L_sep m: rows with m (3 each) x log 3 / N_any, then the mean over the 2 modalities
    for mod in ("image", "tabular"):
        torch.testing.assert_close(terms[f"mce_sep_{mod}"], torch.tensor(3 * math.log(3) / n_any / 2))
    # weights and factors scale the terms: w_sub = 2 is in mce_sub above; a = N / N_m applies with use_a
    bal_a = MCEBalancer(ctx, {"image": 2, "tabular": 2}, MCEConfig(use_b=False, w_sep=0.5))
    bal_a.load_state_dict(bal.state_dict())
    pipe_a = Pipeline(method, NativeHead(ctx, {}, NoConfig()), bal_a)
    bal_a.setup(pipe_a, {"train": StubLoader(split=None, present=present)})  # type: ignore[arg-type]
    pipe_a.train()
    terms_a = pipe_a.loss_terms(batch, pipe_a(batch))
    # a_image = 4 / 3 (three of four rows have the image)
    expected = 0.5 * (4 / 3) * 3 * math.log(3) / n_any / 2
    torch.testing.assert_close(terms_a["mce_sep_image"], torch.tensor(expected))


def test_requires_setup_and_is_inactive_in_eval() -> None:
    ctx = BuildContext(toy_info(), hidden=2)
    method = ToyMethod(ctx)
    bal = MCEBalancer(ctx, {"image": 2, "tabular": 2}, MCEConfig(use_b=False))
    pipe = Pipeline(method, NativeHead(ctx, {}, NoConfig()), bal)
    batch = Batch(inputs={"image": {"x": torch.ones(2, 2)}, "tabular": {"x": torch.ones(2, 2)}},
                  present=torch.tensor([CPL, CPL]), y=torch.tensor([0, 1]), index=torch.arange(2))
    pipe.train()
    with pytest.raises(RuntimeError, match="setup"):
        pipe.loss_terms(batch, pipe(batch))
    pipe.eval()
    assert set(pipe.loss_terms(batch, pipe(batch))) == {"task"}


# ------------------------------------------------------------------------------- with a real method
@pytest.fixture(scope="module")
def tiny() -> tuple:
    info, splits = SyntheticDataset(SyntheticOptions(n_samples=40, image_size=16)).load()
    enc = EncodersConfig(tabular=TabularEncoderConfig(depth=1, heads=2, dropout=0.0))
    ctx = BuildContext(info, enc, hidden=8)
    return info, splits, ctx


def build(ctx: BuildContext, head: str = "linear", **cfg: object) -> Pipeline:
    torch.manual_seed(0)
    method = LateFusion(ctx, LateFusionConfig())
    dims = method.embed_dims()
    h = HEADS.get(head)(ctx, dims, HEADS.get(head).Config())
    return Pipeline(method, h, BALANCERS.get("mce")(ctx, dims, MCEConfig(ref_epochs=1, **cfg)))


@pytest.mark.parametrize("head, cache", [("linear", True), ("dpl", False)])
def test_reference_stage_cache_and_backward(tiny: tuple, head: str, cache: bool) -> None:
    info, splits, ctx = tiny
    train = splits["train"]
    present = torch.from_numpy(simulate_presence(len(train), MissingSpec("both", 0.5), "train", 0))
    loader = StubLoader(split=train, present=present, batch_size=8)
    pipe = build(ctx, head, cache_reference=cache)
    bal = pipe.balancer
    pipe.balancer.setup(pipe, {"train": loader})  # type: ignore[arg-type]
    assert bal.references is not None
    assert all(not p.requires_grad for p in bal.references.parameters())
    pipe.train()
    assert not bal.references.training  # frozen references stay in eval mode
    assert bal.ref_correct.shape == ((len(train), 2) if cache else (0, 2))
    batch = train.batch(torch.arange(12), present)
    out = pipe(batch)
    terms = pipe.loss_terms(batch, out)
    total = torch.stack(list(terms.values())).sum()
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in pipe.parameters() if p.grad is not None)
    if cache:  # the cached per-row correctness equals re-running the frozen predictors
        torch.testing.assert_close(bal.ref_correct[batch.index], bal._reference_correct(batch))


def test_single_modality_batch_has_no_subset_terms(tiny: tuple) -> None:
    info, splits, ctx = tiny
    train = splits["train"]
    present = torch.tensor([IMG] * len(train))
    pipe = build(ctx)
    pipe.balancer.setup(pipe, {"train": StubLoader(split=train, present=present, batch_size=8)})  # type: ignore[arg-type]
    pipe.train()
    batch = train.batch(torch.arange(6), present)
    terms = pipe.loss_terms(batch, pipe(batch))
    terms = {k: v.detach() for k, v in terms.items()}
    assert float(terms["mce_sub"]) == 0.0 and float(terms["mce_rec_image"]) == 0.0
    assert float(terms["mce_sep_tabular"]) == 0.0  # no tabular anywhere: b_T = 0, a_T = 0
    assert all(torch.isfinite(v) for v in terms.values())


def test_capped_subset_pairs_are_reweighted() -> None:
    # 4 (row, subset) pairs, capped at 2 drawn per step, each weighted 4 / 2: with a constant
    # per-pair loss (log 3) the capped L_sub equals the exact one
    K = 3
    ctx = BuildContext(toy_info(K), hidden=2)
    method = ToyMethod(ctx)
    bal = MCEBalancer(ctx, {"image": 2, "tabular": 2}, MCEConfig(use_a=False, use_b=False, max_subset_rows=2))
    pipe = Pipeline(method, NativeHead(ctx, {}, NoConfig()), bal)
    present = torch.tensor([CPL, IMG, TAB, CPL])
    bal.setup(pipe, {"train": StubLoader(split=None, present=present)})  # type: ignore[arg-type]
    x = torch.ones(4, 2)
    batch = Batch(inputs={"image": {"x": x}, "tabular": {"x": x}}, present=present,
                  y=torch.tensor([0, 1, 2, 0]), index=torch.arange(4))
    pipe.train()
    torch.manual_seed(0)
    terms = pipe.loss_terms(batch, pipe(batch))
    assert len(method.seen[-1]) == 2  # the extra forward saw only the 2 drawn pairs
    torch.testing.assert_close(terms["mce_sub"], torch.tensor(2.0 * 4 * math.log(3) / 3 / 4))


# ------------------------------------------------------------------------------- per-epoch masks
class SpyLateFusion(LateFusion):
    """Late fusion that logs the batches of its main training steps (``losses`` is called on those
    only, not on MCE's subset forwards) and of its evaluation forwards."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__(ctx, LateFusionConfig())
        self.epoch = -1
        self.train_seen: list[tuple[int, Batch]] = []
        self.eval_seen: list[Batch] = []

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def forward(self, batch: Batch) -> Output:
        if not self.training:
            self.eval_seen.append(batch)
        return super().forward(batch)

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        self.train_seen.append((self.epoch, batch))
        return super().losses(batch, out)


def _batch_size(n: int) -> int:
    """A batch size whose last training batch keeps at least 8 rows (none is dropped by the loader)."""
    return next(bs for bs in range(12, 24) if n % bs == 0 or n % bs >= 8)


def test_default_training_batches_are_the_protocols(tiny: tuple) -> None:
    info, splits, ctx = tiny
    train = splits["train"]
    present = torch.from_numpy(simulate_presence(len(train), MissingSpec("both", 0.5), "train", 0))
    pipe = build(ctx, use_b=False)
    pipe.balancer.setup(pipe, {"train": StubLoader(split=train, present=present)})  # type: ignore[arg-type]
    pipe.balancer.begin_epoch(0)
    batch = train.batch(torch.arange(6), present)
    assert pipe.balancer.train_batch(batch) is batch


def test_per_epoch_masks_are_redrawn_independently_and_only_in_training() -> None:
    from mmbench.config import TrainConfig
    from mmbench.protocols import combine
    from mmbench.train import Loader, fit

    info, splits = SyntheticDataset(SyntheticOptions(n_samples=240, image_size=16)).load()
    enc = EncodersConfig(tabular=TabularEncoderConfig(depth=1, heads=2, dropout=0.0))
    ctx = BuildContext(info, enc, hidden=8)
    train, val = splits["train"], splits["val"]
    natural = torch.ones(len(train), 2, dtype=torch.bool)
    natural[:5, 1] = False  # five rows have no table at all
    train = replace(train, natural_present=natural)
    spec = MissingSpec("imbalanced", rates={"image": 0.4, "tabular": 0.3})
    present, keep = map(torch.from_numpy, combine(simulate_presence(len(train), spec, "train", 0, natural.numpy()),
                                                  natural.numpy()))
    rows = keep.nonzero().flatten()
    assert not (~present[rows]).all(dim=1).any()  # the protocol never drops both
    val_present = torch.from_numpy(simulate_presence(len(val), spec, "val", 0))
    bs = _batch_size(len(rows))
    loaders = {"train": Loader(train, present, bs, shuffle=True, seed=0, indices=rows),
               "val": Loader(val, val_present, 64)}
    torch.manual_seed(0)
    method = SpyLateFusion(ctx)
    dims = method.embed_dims()
    bal = BALANCERS.get("mce")(ctx, dims, MCEConfig(ref_epochs=1, train_masks="per_epoch"))
    pipe = Pipeline(method, HEADS.get("linear")(ctx, dims, HEADS.get("linear").Config()), bal)
    epochs = 3
    result = fit(pipe, loaders, TrainConfig(epochs=epochs, batch_size=bs, patience=epochs, device="cpu", amp=False),
                 primary_metric="accuracy", task=info.task)

    protocol_absent = (~present[rows]).sum(dim=0)  # rows without image, without table
    masks = []
    for epoch in range(epochs):
        seen = [b for e, b in method.train_seen if e == epoch]
        index = torch.cat([b.index for b in seen])
        pres = torch.cat([b.present for b in seen])
        assert len(set(index.tolist())) == len(index)  # each row at most once per epoch
        skipped = len(rows) - len(index)  # rows that lost both modalities this epoch
        # every epoch drops each modality from as many rows as the protocol does (now independently)
        torch.testing.assert_close((~pres).sum(dim=0) + skipped, protocol_absent)
        assert pres.any(dim=1).all()  # rows left with nothing never reach the model
        assert result.curves[epoch]["balancer"]["epoch_absent"][2] == skipped
        full = torch.zeros(len(train), 2, dtype=torch.bool)
        full[index] = pres
        masks.append((full, skipped))
        for b in seen:
            assert not b.present[b.index < 5, 1].any()  # natural missingness is never undone
            assert (b.inputs["tabular"]["num"][~b.present[:, 1]] == 0).all()  # absent inputs stay zero
            hidden = b.present[:, 0] & ~present[b.index, 0]  # images the protocol hides, shown this epoch
            assert (b.inputs["image"]["pixels"][hidden].flatten(1).abs().sum(dim=1) > 0).all()
    assert sum(skipped for _, skipped in masks) > 0  # independent draws: some rows lose both
    assert not torch.equal(masks[0][0], masks[1][0]) and not torch.equal(masks[1][0], masks[2][0])
    shown = torch.stack([m for m, _ in masks]).any(dim=0)
    assert (shown & ~present)[rows].any()  # over the epochs the model sees inputs the protocol hides
    # validation kept the protocol's mask throughout
    assert method.eval_seen and all(torch.equal(b.present, val_present[b.index]) for b in method.eval_seen)
    # the cached reference scores cover every row where the modality exists, not just the protocol's
    assert bal.ref_correct[rows[~present[rows, 0]], 0].sum() > 0

"""Training regimes (docs/training.md): one fair budget for every method, the papers' recipes under
``paper``, stage budgets, the trainer's schedules and optimisers, and the final-weight selection
across stages."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mmbench.config import TrainConfig, load_dataset, load_method, parse_set, resolve
from mmbench.data.batch import Output
from mmbench.errors import ConfigError
from mmbench.models.base import Method, Stage
from mmbench.plan import GridRequest, build_plan
from mmbench.protocols import MissingSpec
from mmbench.regime import split_epochs, trainer_defaults
from mmbench.spec import RunSpec
from mmbench.typed import dump

CELL = MissingSpec("both", 0.5)
ALL = ["late_fusion", "dfpl", "ifmmin", "dmrnet", "drfuse", "shaspec", "late_fusion+mce", "late_fusion+dpl"]


def spec(method: str, regime: str = "fair", dataset: str = "synthetic", **sets) -> RunSpec:
    return resolve(method, dataset, CELL, 0, regime=regime,
                   overrides=parse_set([f"{k}={v}" for k, v in sets.items()]))


def without_stages(s: RunSpec) -> dict:
    d = dump(s.train)
    d.pop("stages")
    return d


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ------------------------------------------------------------------------------------------- defaults
def test_defaults_file_states_every_trainer_default() -> None:
    """configs/defaults.yaml is the one visible place of the trainer defaults: it equals TrainConfig's."""
    assert trainer_defaults() == dump(TrainConfig())


# ----------------------------------------------------------------------------------------------- fair
def test_fair_gives_every_method_the_same_trainer_settings() -> None:
    specs = {m: spec(m) for m in ALL}
    reference = {**trainer_defaults(), **load_dataset("synthetic").train}  # defaults < card, nothing else
    reference.pop("stages")
    for m, s in specs.items():
        assert s.regime == "fair"
        assert without_stages(s) == reference, m  # dfpl's Adam no longer applies under fair
    assert specs["dfpl"].train.optimizer == specs["late_fusion"].train.optimizer == "adamw"
    # the multi-stage method splits the same budget; single-stage methods have no stage settings
    assert specs["ifmmin"].train.stages == {"pretrain": {"epochs": 4}, "student": {"epochs": 8}}
    assert all(specs[m].train.stages == {} for m in ALL if m != "ifmmin")
    assert sum(specs["ifmmin"].train.stage_epochs().values()) == specs["ifmmin"].train.epochs


def test_fair_budget_follows_train_epochs() -> None:
    short = {m: spec(m, **{"train.epochs": 6}) for m in ("ifmmin", "dmrnet", "late_fusion+mce")}
    assert short["ifmmin"].train.stage_epochs() == {"pretrain": 2, "student": 4}
    assert short["dmrnet"].method.params.hcr_warmup_epochs == 1  # max(1, round(0.06 x 6)): on from epoch 2
    assert short["late_fusion+mce"].balancer.params.ref_epochs == 6
    long = {m: spec(m, **{"train.epochs": 100}) for m in ("ifmmin", "dmrnet")}
    assert long["ifmmin"].train.stage_epochs() == {"pretrain": 33, "student": 67}
    assert long["dmrnet"].method.params.hcr_warmup_epochs == 6
    assert spec("ifmmin", **{"train.epochs": 2}).train.stage_epochs() == {"pretrain": 1, "student": 1}
    # --balancer mce on any method follows the budget too
    assert spec("shaspec", **{"balancer": "mce", "train.epochs": 3}).balancer.params.ref_epochs == 3
    # explicit values win; the other stages take the rest of the budget
    s = spec("ifmmin", **{"train.epochs": 6, "train.stages.pretrain.epochs": 1})
    assert s.train.stage_epochs() == {"pretrain": 1, "student": 5}
    assert spec("dmrnet", **{"params.hcr_warmup_epochs": 3}).method.params.hcr_warmup_epochs == 3
    with pytest.raises(ConfigError, match="train.epochs=1 is too short for the stages pretrain, student"):
        spec("ifmmin", **{"train.epochs": 1})
    with pytest.raises(ConfigError, match="train.stages.finetune: not a stage of this method; its stages are"):
        spec("ifmmin", **{"train.stages.finetune.epochs": 2})
    with pytest.raises(ConfigError, match="train.stages.main: not a stage of this method; it trains in one"):
        spec("late_fusion", **{"train.stages.main.epochs": 2})


def test_split_epochs_sums_to_the_budget() -> None:
    w = {"a": 1 / 3, "b": 2 / 3}
    for total in range(2, 120):
        out = split_epochs(total, w, {}, "x")
        assert sum(out.values()) == total and min(out.values()) >= 1
        assert abs(out["a"] - total / 3) <= 1
    three = split_epochs(3, {"a": 0.05, "b": 0.05, "c": 0.9}, {}, "x")
    assert three == {"a": 1, "b": 1, "c": 1}


# ---------------------------------------------------------------------------------------------- paper
def test_paper_gives_the_published_recipes() -> None:
    ifmmin = spec("ifmmin", "paper").train
    assert (ifmmin.optimizer, ifmmin.lr, ifmmin.weight_decay, ifmmin.scheduler, ifmmin.decay_start, ifmmin.epochs) \
        == ("adam", 2e-4, 0.0, "linear", 0.5, 60)
    pre, stu = ifmmin.for_stage("pretrain"), ifmmin.for_stage("student")
    assert (pre.epochs, pre.batch_size, pre.betas, pre.grad_clip) == (20, 64, (0.9, 0.999), 0.5)
    assert (stu.epochs, stu.batch_size, stu.betas, stu.grad_clip) == (40, 128, (0.5, 0.999), 1.0)
    dmr = spec("dmrnet", "paper")
    t = dmr.train
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.scheduler, t.step_epochs, t.step_gamma, t.epochs,
            t.batch_size) == ("sgd", 1e-3, 0.9, 1e-4, "step", 70, 0.1, 100, 64)
    assert dmr.method.params.hcr_warmup_epochs == 6
    dfpl = spec("dfpl", "paper").train
    assert (dfpl.optimizer, dfpl.epochs) == ("adam", 100)
    sha = spec("shaspec", "paper").train
    assert (sha.optimizer, sha.lr, sha.momentum, sha.nesterov, sha.scheduler) == ("sgd", 1e-2, 0.99, True, "poly")
    mce = spec("late_fusion+mce", "paper")
    assert (mce.train.optimizer, mce.train.betas, mce.train.epochs, mce.balancer.params.ref_epochs) \
        == ("adam", (0.5, 0.999), 60, 5)
    # a method without a paper recipe trains as under fair; the regime still tells the runs apart
    fair_lf, paper_lf = spec("late_fusion"), spec("late_fusion", "paper")
    assert paper_lf.train == fair_lf.train and paper_lf.run_id != fair_lf.run_id
    # a shorter budget shortens the published stages in their proportions
    assert spec("ifmmin", "paper", **{"train.epochs": 6}).train.stage_epochs() == {"pretrain": 2, "student": 4}


def test_regime_is_in_the_spec_tree_and_round_trips() -> None:
    s = spec("ifmmin", "paper")
    d = s.to_dict()
    assert d["regime"] == "paper" and d["train"]["stages"]["student"]["betas"] == [0.5, 0.999]
    back = RunSpec.from_dict(d)
    assert back == s and back.run_id == s.run_id
    with pytest.raises(ConfigError, match="--regime 'lax': expected one of fair, paper"):
        spec("late_fusion", "lax")


# ------------------------------------------------------------------------------------------- configs
def test_a_method_yaml_cannot_change_the_fair_settings(tmp_path: Path) -> None:
    _write(tmp_path / "methods" / "lf.yaml", "impl: late_fusion\ntrain: {optimizer: adam}\n")
    with pytest.raises(ConfigError, match="lf.yaml: train: a method YAML cannot set trainer settings"):
        load_method("lf", [str(tmp_path)])


@pytest.mark.parametrize(("text", "error"), [
    ("impl: ifmmin\n", "fair.stages: method 'ifmmin' trains in the stages pretrain, student"),
    ("impl: ifmmin\nfair: {stages: {student: 0.5, pretrain: 0.5}}\n", "trains in the stages pretrain, student"),
    ("impl: ifmmin\nfair: {stages: {pretrain: 0.5, student: 0.6}}\n", "the shares must sum to 1, got 1.1"),
    ("impl: late_fusion\nfair: {stages: {main: 1.0}}\n", "trains in one stage: remove fair.stages"),
    ("impl: dmrnet\nfair: {params: {warmup: 0.1}}\n", "fair.params.warmup: not a parameter of DMRNetConfig"),
    ("impl: ifmmin\nfair: {stages: {pretrain: 0.5, student: 0.5}}\npaper: {train: {stages: {pretrain: {epochs: 2}}}}\n",
     "give the published epochs of every stage"),
    ("impl: late_fusion\npaper: {train: {stages: {pretrain: {epochs: 2}}}}\n", "it trains in one stage"),
    ("impl: late_fusion\npaper: {train: {optimizer: lion}}\n", "paper.train.optimizer: expected"),
    ("impl: late_fusion\npaper: {train: {nesterov: true}}\n", "nesterov needs optimizer sgd"),
    ("impl: ifmmin\nfair: {stages: {pretrain: 0.5, student: 0.5}}\n"
     "paper: {train: {epochs: 2, stages: {pretrain: {epochs: 1, device: cpu}, student: {epochs: 1}}}}\n",
     "'device' cannot be set per stage"),
])
def test_fair_and_paper_blocks_are_checked(tmp_path: Path, text: str, error: str) -> None:
    _write(tmp_path / "methods" / "m.yaml", text)
    with pytest.raises(ConfigError, match=error):
        load_method("m", [str(tmp_path)])


def test_protocol_regime_and_the_flag(tmp_path: Path) -> None:
    _write(tmp_path / "protocols" / "p.yaml", "methods: [ifmmin]\ndatasets: [synthetic-tiny]\nregime: paper\n")
    dirs = [str(tmp_path)]
    assert {s.regime for s in build_plan(GridRequest(protocol="p", config_dir=dirs)).specs} == {"paper"}
    assert {s.regime for s in build_plan(GridRequest(protocol="p", config_dir=dirs, regime="fair")).specs} == {"fair"}
    plain = build_plan(GridRequest(methods=["ifmmin"], datasets=["synthetic-tiny"])).specs[0]
    assert plain.regime == "fair" and plain.train.stage_epochs() == {"pretrain": 3, "student": 5}


def test_dry_run_shows_the_regime_and_the_stage_budgets(tmp_path: Path, monkeypatch, capsys) -> None:
    import sys

    from mmbench.cli import main

    monkeypatch.setattr(sys, "argv", ["mmbench", "run", "-m", "ifmmin", "-m", "dmrnet", "-d", "synthetic",
                                      "--dry-run", "-o", str(tmp_path), "--regime", "fair"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "regime=fair" in out and "pretrain 4 + student 8 epochs" in out and "method.hcr_warmup_epochs=1" in out
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- trainer
def test_lr_schedules_by_hand() -> None:
    from mmbench.train import lr_factor

    def f(steps, **kw):  # a stage of 10 steps, 5 per epoch
        cfg = TrainConfig(**kw)
        factor = lr_factor(cfg, 10, cfg.warmup_epochs * 5, 5)
        return [round(factor(s), 6) for s in steps]

    # linear: held to 50 % of the stage, then to 0 at the end (10 steps, no warm-up)
    assert f([0, 5, 6, 9, 10], scheduler="linear", decay_start=0.5) == [1.0, 1.0, 0.8, 0.2, 0.0]
    # step: x0.1 every 1 epoch of 5 steps
    assert f([0, 4, 5, 9, 10], scheduler="step", step_epochs=1, step_gamma=0.1) == [1.0, 1.0, 0.1, 0.1, 0.01]
    # poly 0.5: (1 - s/10) ** 0.5
    assert f([0, 6], scheduler="poly", poly_power=0.5) == [1.0, round(0.4 ** 0.5, 6)]
    # cosine after a one-epoch (5-step) warm-up: ramp (s + 1) / 5, then (1 + cos(pi p)) / 2 over 5 steps
    assert f([0, 4, 5, 7], scheduler="cosine", warmup_epochs=1) == [0.2, 1.0, 1.0, round(0.5 * (1 + math.cos(
        math.pi * 0.4)), 6)]


def test_optimiser_settings_reach_torch() -> None:
    from mmbench.train import make_optimizer

    p = [nn.Parameter(torch.zeros(2))]
    adam = make_optimizer(p, TrainConfig(optimizer="adam", betas=(0.5, 0.99), weight_decay=0.0))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.5, 0.99)
    sgd = make_optimizer(p, TrainConfig(optimizer="sgd", momentum=0.99, nesterov=True))
    assert sgd.defaults["momentum"] == 0.99 and sgd.defaults["nesterov"] is True


# ------------------------------------------------------------------------------ stages and selection
class TwoStage(Method):
    """A linear classifier on the synthetic table's numbers: stage ``learn`` fits the labels, stage
    ``forget`` ascends the same loss, so its epochs validate worse than the best ``learn`` epoch."""

    def __init__(self, ctx, cfg) -> None:
        super().__init__(ctx, cfg)
        self.fc = nn.Linear(5, ctx.info.num_classes)
        self.stage, self.selected = "learn", None

    learn_predicts = True

    def stages(self) -> list[Stage]:
        return [Stage("learn", predicts=self.learn_predicts, why_not="" if self.learn_predicts else "toy: no head"),
                Stage("forget")]

    def begin_stage(self, name: str) -> None:
        self.stage = name

    def select_stage(self, name: str) -> None:
        self.selected = name

    def forward(self, batch):
        return Output(logits=self.fc(batch.inputs["tabular"]["num"].float()), embeddings={}, aux={})

    def losses(self, batch, out):
        ce = nn.functional.cross_entropy(out.logits, batch.y)
        return {"task": ce if self.stage == "learn" else -ce}


class TwoStageNoPredict(TwoStage):
    learn_predicts = False


def _fit_two_stage(model_cls=TwoStage, **train):
    from mmbench.balancers.none import NoBalancer
    from mmbench.heads.native import NativeHead
    from mmbench.models.params import NoConfig
    from mmbench.pipeline import Pipeline
    from mmbench.train import Loader, fit, predict
    from tests.conftest import tiny_ctx, tiny_data

    _, splits = tiny_data()
    ctx = tiny_ctx()
    torch.manual_seed(0)
    model = model_cls(ctx, NoConfig())
    pipe = Pipeline(model, NativeHead(ctx, {}, NoConfig()), NoBalancer(ctx, {}, NoConfig()))
    ones = {k: torch.ones(len(splits[k]), 2, dtype=torch.bool) for k in ("train", "val")}
    loaders = {"train": Loader(splits["train"], ones["train"], 8, shuffle=True, seed=0),
               "val": Loader(splits["val"], ones["val"], 64)}
    cfg = TrainConfig(**{"epochs": 4, "lr": 0.05, "patience": 10, "device": "cpu", "amp": False, **train})
    result = fit(pipe, loaders, cfg, primary_metric="accuracy", task="multiclass")
    final = predict(pipe, loaders["val"])
    return result, model, float((final.logits.argmax(1) == final.y).mean())


def test_final_weights_are_the_best_validation_epoch_over_all_stages() -> None:
    result, model, final_acc = _fit_two_stage(stages={"learn": {"epochs": 6}, "forget": {"epochs": 3}})
    vals = [row["val"]["accuracy"] for row in result.curves]
    stages = [row["stage"] for row in result.curves]
    assert stages == ["learn"] * 6 + ["forget"] * 3
    best = max(vals)
    assert max(vals[6:]) < best  # the forgetting stage is worse, so selection must reach back
    assert result.selection["stage"] == "learn" and model.selected == "learn"
    assert result.best_epoch == vals.index(best) + 1 and result.best_val == best
    assert final_acc == pytest.approx(best)  # the kept weights are that epoch's
    assert [s["candidate"] for s in result.selection["stages"]] == [True, True]

    last, model, final_acc = _fit_two_stage(stages={"learn": {"epochs": 6}, "forget": {"epochs": 3}},
                                            stage_selection="last")
    assert last.selection["stage"] == "forget" and model.selected is None
    assert last.best_epoch > 6 and final_acc == pytest.approx(max(vals[6:]))
    assert last.selection["stages"][0]["why_not"] == "stage_selection: last"

    # a stage whose model cannot predict is never kept, and the record says why
    blind, model, final_acc = _fit_two_stage(TwoStageNoPredict, stages={"learn": {"epochs": 6},
                                                                         "forget": {"epochs": 3}})
    assert blind.selection["stage"] == "forget" and final_acc == pytest.approx(max(vals[6:]))
    assert blind.selection["stages"][0] == {"stage": "learn", "epochs": 6, "best_epoch": vals.index(best) + 1,
                                            "best_val": best, "candidate": False, "why_not": "toy: no head"}


def test_each_stage_trains_with_its_own_settings() -> None:
    result, _, _ = _fit_two_stage(scheduler="constant", stages={"learn": {"epochs": 2, "batch_size": 8},
                                                                 "forget": {"epochs": 1, "batch_size": 29,
                                                                            "lr": 0.01}})
    n = 58  # training rows of tiny_data
    assert result.steps == 2 * math.ceil(n / 8) + math.ceil(n / 29)
    assert [r["lr"] for r in result.curves] == [0.05, 0.05, 0.01]


def test_ifmmin_stage_one_model_predicts_when_selected() -> None:
    """IF-MMIN's stage-1 model predicts every missing pattern: selecting it switches the forward."""
    from mmbench.models.ifmmin import IFMMIN, IFMMINConfig
    from tests.conftest import MIXED, make_batch, tiny_ctx

    torch.manual_seed(0)
    model = IFMMIN(tiny_ctx(), IFMMINConfig(ae_layers=(8, 4), ae_blocks=2, cls_layers=(8,))).eval()
    batch = make_batch(MIXED)
    model.begin_stage("student")
    assert "recon" in model(batch).aux
    model.select_stage("pretrain")
    out = model(batch)
    assert "recon" not in out.aux and torch.isfinite(out.logits).all() and out.logits.shape[0] == len(MIXED)


# ------------------------------------------------------------------------------------- end to end
def test_short_fair_budget_records_stages_selection_and_a_live_regulariser(tmp_path: Path) -> None:
    """Two epochs: IF-MMIN trains 1 + 1 and its record says which stage's weights were tested; DMRNet's
    hard-combination term (warm-up max(1, round(0.06 x 2)) = 1) is on in epoch 2 (with the fixed 6-epoch
    warm-up it never was)."""
    from mmbench.records import read_record, record_path
    from mmbench.runner import execute

    sets = {"train.epochs": 2, "data.n_samples": 160}
    rec, _ = execute(spec("ifmmin", dataset="synthetic-tiny", **sets), tmp_path)
    assert rec.status == "ok", rec.error
    assert [r["stage"] for r in rec.curves] == ["pretrain", "student"]
    sel = read_record(record_path(tmp_path, spec("ifmmin", dataset="synthetic-tiny", **sets))).selection
    assert sel is not None and sel.rule == "all" and [s.stage for s in sel.stages] == ["pretrain", "student"]
    vals = [r["val"]["accuracy"] for r in rec.curves]
    assert sel.stage == ("student" if vals[1] >= vals[0] else "pretrain") and rec.best_epoch == sel.epoch
    assert rec.metrics.val["accuracy"] == pytest.approx(max(vals))

    rec, _ = execute(spec("dmrnet", dataset="synthetic-tiny", **sets), tmp_path)
    assert rec.status == "ok", rec.error
    hcr = [r["train_loss"]["hcr"] for r in rec.curves]
    assert hcr[0] == 0 and hcr[1] > 0

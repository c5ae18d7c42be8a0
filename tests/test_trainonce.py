"""Train once, evaluate many: cells that differ only in test-time missingness share one training.

A test-rate sweep trains once per training cell, and its records equal, bit for bit on CPU, those of
separate runs at each test rate; resume works at both levels (done cells are skipped; a unit whose
cells are all done trains nothing; a partly done unit is evaluated from its saved weights).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest

import mmbench.runner as runner
from mmbench.checkpoint import checkpoint_path
from mmbench.config import resolve
from mmbench.executors import Hooks, RunContext, SequentialExecutor
from mmbench.plan import GridRequest, Plan, build_plan
from mmbench.protocols import MissingSpec
from mmbench.records import read_record, record_path

FAST = {"train.epochs": 2, "data.n_samples": 160, "train.eval_batch_size": 64, "train.batch_size": 16}
RATES = (0.1, 0.5, 0.9)


def sweep_specs(method: str = "late_fusion", seeds: tuple[int, ...] = (0,), rates=RATES, overrides=None):
    return [resolve(method, "synthetic-tiny", MissingSpec("both", 0.5, test_rate=t), s,
                    overrides={**FAST, **(overrides or {})}) for s in seeds for t in rates]


@pytest.fixture
def fits(monkeypatch) -> list[str]:
    """The train config of every call of the trainer's ``fit``."""
    calls: list[str] = []
    real = runner.fit

    def counting(pipeline, loaders, cfg, **kw):
        calls.append(cfg)
        return real(pipeline, loaders, cfg, **kw)

    monkeypatch.setattr(runner, "fit", counting)
    return calls


def run_plan(specs, out: Path) -> list:
    return SequentialExecutor().run(Plan(specs, "unit"), RunContext(out), Hooks())


def same_record(a, b) -> None:
    """Equal numbers: metrics, masks, curves (minus timings), predictions, bit for bit."""
    assert a.run_id == b.run_id and a.training_id == b.training_id
    assert a.metrics == b.metrics
    assert a.masks == b.masks and a.best_epoch == b.best_epoch
    strip = lambda curves: [{k: v for k, v in row.items() if k != "seconds"} for row in curves]  # noqa: E731
    assert strip(a.curves) == strip(b.curves)


def same_predictions(out_a: Path, out_b: Path, spec) -> None:
    pa = np.load(record_path(out_a, spec).with_suffix(".npz"))
    pb = np.load(record_path(out_b, spec).with_suffix(".npz"))
    assert sorted(pa.files) == sorted(pb.files)
    for k in pa.files:
        np.testing.assert_array_equal(pa[k], pb[k])


def test_training_id_ignores_only_test_time_missingness() -> None:
    a, b, c = sweep_specs()
    assert a.run_id != b.run_id and a.training_id == b.training_id == c.training_id
    assert a.training_spec().missing == MissingSpec("both", 0.5)
    # a test rate equal to the train rate is the same training as none given
    assert resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides=FAST).training_id \
        == a.training_id
    other_seed = sweep_specs(seeds=(1,))[0]
    other_rate = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.3, test_rate=0.1), 0, overrides=FAST)
    assert len({a.training_id, other_seed.training_id, other_rate.training_id}) == 3
    imb = [resolve("late_fusion", "synthetic-tiny", MissingSpec("imbalanced", 0.0, {"image": 0.3},
                                                                 test_rates={"image": t}), 0, overrides=FAST)
           for t in (0.1, 0.6)]
    assert imb[0].training_id == imb[1].training_id and imb[0].run_id != imb[1].run_id


def test_plan_units_group_the_test_rates_of_each_training() -> None:
    plan = build_plan(GridRequest(methods=["late_fusion"], datasets=["synthetic-tiny"], protocol="test-sweep",
                                  seeds="0,1", set=["train.epochs=1"]))
    assert len(plan) == 18
    units = plan.units()
    assert len(units) == 2 and sorted(len(u) for u in units) == [9, 9]
    for unit in units:
        assert len({plan.specs[i].training_id for i in unit}) == 1
        assert len({plan.specs[i].missing.test_rate for i in unit}) == 9


def test_sweep_trains_once_per_training_cell_and_equals_separate_runs(tmp_path: Path, fits) -> None:
    specs = sweep_specs(seeds=(0, 1))
    outcomes = run_plan(specs, tmp_path / "sweep")
    assert [o.status for o in outcomes] == ["ok"] * 6
    assert len(fits) == 2  # one training per (method, dataset, train cell, seed)
    assert checkpoint_path(tmp_path / "sweep", specs[0]).is_file()
    fits.clear()
    for spec in specs:  # the same cells as separate runs: one training each
        runner.execute(spec, tmp_path / "separate")
    assert len(fits) == 6
    for spec in specs:
        a = read_record(record_path(tmp_path / "sweep", spec))
        b = read_record(record_path(tmp_path / "separate", spec))
        assert a.training_id == spec.training_id and a.status == "ok"
        same_record(a, b)
        same_predictions(tmp_path / "sweep", tmp_path / "separate", spec)
    assert not (tmp_path / "separate" / "checkpoints").exists()  # single-cell trainings save nothing
    # test masks differ between the cells of a unit, train/val masks do not
    recs = [read_record(record_path(tmp_path / "sweep", s)) for s in specs[:3]]
    assert len({r.masks["test"].hash for r in recs}) == 3 and len({r.masks["train"].hash for r in recs}) == 1


def test_resume_at_both_levels(tmp_path: Path, fits, monkeypatch) -> None:
    out = tmp_path / "r"
    specs = sweep_specs()
    run_plan(specs, out)
    assert len(fits) == 1
    before = {s.run_id: read_record(record_path(out, s)) for s in specs}
    fits.clear()
    # every cell done: nothing is trained, nothing is even loaded
    monkeypatch.setattr(runner, "load_data", lambda *a, **k: pytest.fail("loaded data for a finished unit"))
    assert all(o.skipped for o in run_plan(specs, out))
    monkeypatch.undo()
    monkeypatch.setattr(runner, "fit", lambda *a, **k: pytest.fail("trained a unit whose weights are saved"))
    # one cell lost, and one test rate added: both are evaluated from the saved weights
    record_path(out, specs[1]).unlink()
    extra = sweep_specs(rates=(0.7,))[0]
    outcomes = run_plan([*specs, extra], out)
    assert [o.status for o in outcomes] == ["cached", "ok", "cached", "ok"]
    again = read_record(record_path(out, specs[1]))
    same_record(again, before[specs[1].run_id])
    # the added cell equals a separate run at that test rate
    monkeypatch.undo()
    runner.execute(extra, tmp_path / "sep")
    same_record(read_record(record_path(out, extra)), read_record(record_path(tmp_path / "sep", extra)))
    same_predictions(out, tmp_path / "sep", extra)


def test_unreadable_checkpoint_trains_again(tmp_path: Path, fits) -> None:
    out = tmp_path / "c"
    specs = sweep_specs(rates=(0.1, 0.9))
    run_plan(specs, out)
    ckpt = checkpoint_path(out, specs[0])
    ckpt.write_bytes(b"not a checkpoint")
    record_path(out, specs[0]).unlink()
    fits.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [o.status for o in run_plan(specs, out)] == ["ok", "cached"]
    assert len(fits) == 1 and any("unreadable checkpoint" in str(w.message) for w in caught)


def test_a_failed_training_fails_every_cell_of_its_unit(tmp_path: Path, monkeypatch) -> None:
    from mmbench.errors import RunFailed

    def boom(*a, **k):
        raise RunFailed("non-finite loss (task) in stage 'main' epoch 1")

    monkeypatch.setattr(runner, "fit", boom)
    outcomes = run_plan(sweep_specs(rates=(0.1, 0.9)), tmp_path)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("non-finite" in o.record.error and o.record.training_id for o in outcomes)


BUILTINS = ["late_fusion", "dfpl", "drfuse", "shaspec", "ifmmin", "dmrnet", "late_fusion+dpl", "late_fusion+mce"]


@pytest.mark.parametrize("method", BUILTINS)
def test_restored_weights_predict_what_the_trained_ones_do(method: str, tmp_path: Path) -> None:
    """Every built-in method, head and balancer: the checkpoint holds all that evaluation reads."""
    quick = {"train.epochs": 1, "train.max_steps_per_epoch": 3}
    if method == "ifmmin":
        quick.update({"train.epochs": 2})  # one epoch per stage (the fair regime splits the budget)
    specs = sweep_specs(method, rates=(0.2, 0.8), overrides=quick)
    run_plan(specs, tmp_path / "a")
    import shutil

    shutil.copytree(tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints")
    outcomes = run_plan(specs, tmp_path / "b")  # no records there: both cells from the checkpoint
    assert [o.status for o in outcomes] == ["ok", "ok"]
    for spec in specs:
        same_record(read_record(record_path(tmp_path / "a", spec)), read_record(record_path(tmp_path / "b", spec)))
        same_predictions(tmp_path / "a", tmp_path / "b", spec)


def test_slurm_submits_one_array_task_per_unit(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    from mmbench.slurm import SlurmOptions, run_slurm

    specs = sweep_specs(rates=(0.1, 0.9)) + sweep_specs(seeds=(1,), rates=(0.5,))
    messages: list[str] = []
    outcomes = run_slurm(Plan(specs, "unit"), RunContext(tmp_path), SlurmOptions(cluster="debug", poll_s=0),
                         Hooks(log=messages.append))
    assert [o.status for o in outcomes] == ["ok", "ok", "ok"]
    assert any("submitted 3 cell(s) in 2 training(s)" in m for m in messages)
    recs = [read_record(record_path(tmp_path, s)) for s in specs]
    assert recs[0].training_id == recs[1].training_id != recs[2].training_id


def test_execute_unit_refuses_cells_of_different_trainings(tmp_path: Path) -> None:
    a = sweep_specs()[0]
    b = dataclasses.replace(a, train_seed=5)
    with pytest.raises(ValueError, match="share one training_id"):
        runner.execute_unit([a, b], tmp_path)

"""Optional MLflow tracker: one MLflow run per record (name = run id), tags, per-epoch metrics; a
tracker failure warns once and never fails a run. Skipped when the ``mlflow`` extra is not installed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mmbench.config import resolve
from mmbench.executors import Hooks, RunContext, SequentialExecutor
from mmbench.plan import Plan
from mmbench.protocols import MissingSpec
from mmbench.records import read_record, record_path
from mmbench.tracking import MLflowTracker, default_uri, make_tracker

FAST = {"train.epochs": 2, "data.n_samples": 160, "train.eval_batch_size": 64, "train.max_steps_per_epoch": 3}


def sweep(rates=(0.2, 0.8)):
    return [resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5, test_rate=t), 0, overrides=FAST)
            for t in rates]


def test_runs_are_mirrored_into_a_sqlite_store(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    specs = sweep()
    outcomes = SequentialExecutor().run(Plan(specs, "unit"), RunContext(tmp_path / "r", tracker="mlflow",
                                                                        tracker_uri=uri), Hooks())
    assert [o.status for o in outcomes] == ["ok", "ok"]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("unit")  # the protocol's name
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {s.run_id for s in specs}
    for spec in specs:
        rec = read_record(record_path(tmp_path / "r", spec))
        run = runs[spec.run_id]
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["dataset"] == "synthetic-tiny" and tags["method"] == "late_fusion" and tags["seed"] == "0"
        assert tags["cell"] == spec.missing.label("train") and tags["training_id"] == spec.training_id
        assert run.data.metrics["test/accuracy"] == pytest.approx(rec.metrics.test["accuracy"])
        history = client.get_metric_history(run.info.run_id, "val/accuracy")
        assert [m.step for m in history] == [1, 2]  # one point per epoch
        assert [m.value for m in history] == pytest.approx([row["val"]["accuracy"] for row in rec.curves])
    # a cell evaluated later from the saved weights gets its epochs from the record's curves
    extra = sweep(rates=(0.5,))
    SequentialExecutor().run(Plan([*specs, *extra], "unit"), RunContext(tmp_path / "r", tracker="mlflow",
                                                                         tracker_uri=uri), Hooks())
    run = next(r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == extra[0].run_id)
    assert len(client.get_metric_history(run.info.run_id, "train_loss/task")) == 2


def test_a_tracker_failure_warns_once_and_never_fails_a_run(tmp_path: Path, caplog) -> None:
    pytest.importorskip("mlflow")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    uri = f"sqlite:///{blocker / 'sub' / 'mlflow.db'}"  # cannot be created
    with caplog.at_level(logging.WARNING, logger="mmbench.tracking"):
        outcomes = SequentialExecutor().run(Plan(sweep(), "unit"), RunContext(tmp_path / "r", tracker="mlflow",
                                                                              tracker_uri=uri), Hooks())
    assert [o.status for o in outcomes] == ["ok", "ok"]
    lines = [r for r in caplog.records if r.name == "mmbench.tracking"]
    assert len(lines) == 1 and "is off for this process" in lines[0].getMessage()


def test_tracker_choice_and_default_store(tmp_path: Path, monkeypatch) -> None:
    from mmbench.errors import ConfigError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert make_tracker(None, None, tmp_path) is None
    assert default_uri(tmp_path) == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert isinstance(make_tracker("mlflow", None, tmp_path), MLflowTracker)
    assert make_tracker("mlflow", None, tmp_path).uri == "http://example:5000"
    with pytest.raises(ConfigError, match="--tracker 'wandb'"):
        make_tracker("wandb", None, tmp_path)


def test_cli_tracker_flags(monkeypatch, capsys, tmp_path: Path) -> None:
    from mmbench.cli import main

    monkeypatch.setattr("sys.argv", ["mmbench", "run", "-m", "late_fusion", "-d", "synthetic-tiny", "-o",
                                     str(tmp_path), "--tracker-uri", "sqlite:///x.db"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and "--tracker-uri is for --tracker mlflow" in capsys.readouterr().err

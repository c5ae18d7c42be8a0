"""Run records: atomic writes, round trip, resume, failures recorded, schema guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmbench.config import SCHEMA_VERSION, resolve
from mmbench.errors import MMBenchError
from mmbench.models.late_fusion import LateFusion
from mmbench.protocols import MissingSpec
from mmbench.records import atomic_write_bytes, load_records, read_record, record_path
from mmbench.runner import execute

FAST = {"train.epochs": 1, "data.n_samples": 120}


def _spec(seed: int = 0, **over):
    return resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), seed, overrides={**FAST, **over})


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    p = tmp_path / "a" / "b.json"
    atomic_write_bytes(p, b"{}")
    atomic_write_bytes(p, b'{"x": 1}')
    assert json.loads(p.read_text()) == {"x": 1}
    assert [q.name for q in p.parent.iterdir()] == ["b.json"]


def test_record_round_trip_and_resume(tmp_path: Path) -> None:
    spec = _spec()
    rec, skipped = execute(spec, tmp_path)
    assert not skipped and rec["status"] == "ok"
    path = record_path(tmp_path, spec)
    disk = read_record(path)
    assert disk["run_id"] == spec.run_id and disk["spec"] == spec.to_dict()
    for key in ("schema_version", "run_id", "status", "spec", "primary_metric", "metrics", "ceiling", "masks",
                "curves", "timing", "env", "started_at", "finished_at"):
        assert key in disk
    assert set(disk["metrics"]) == {"val", "test", "test_by_pattern"}
    assert set(disk["metrics"]["test_by_pattern"]) == {"complete", "image_only", "tabular_only"}
    assert disk["masks"]["test"]["hash"] and disk["timing"]["samples_per_second"] > 0
    assert path.with_suffix(".npz").is_file()
    again, skipped = execute(spec, tmp_path)
    assert skipped and again["metrics"] == disk["metrics"]  # cached result is reported, not dropped
    forced, skipped = execute(spec, tmp_path, force=True)
    assert not skipped and forced["started_at"] >= disk["started_at"]


def test_same_spec_twice_gives_identical_metrics(tmp_path: Path) -> None:
    spec = _spec()
    a, _ = execute(spec, tmp_path / "a")
    b, _ = execute(spec, tmp_path / "b")
    assert a["metrics"] == b["metrics"]
    assert a["masks"] == b["masks"]


def test_masks_are_identical_across_methods(tmp_path: Path) -> None:
    a, _ = execute(_spec(), tmp_path)
    b, _ = execute(_spec(**{"params.dropout": 0.3}), tmp_path)
    assert a["run_id"] != b["run_id"]
    assert a["masks"] == b["masks"]


def test_nan_loss_fails_the_run_and_records_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_losses(self, batch, out):
        return {"task": out.logits.sum() * float("nan")}

    monkeypatch.setattr(LateFusion, "losses", nan_losses)
    rec, _ = execute(_spec(), tmp_path)
    assert rec["status"] == "failed" and "non-finite loss" in rec["error"]
    assert read_record(record_path(tmp_path, _spec()))["status"] == "failed"
    monkeypatch.undo()
    rec, skipped = execute(_spec(), tmp_path)  # a failed record is re-run, not skipped
    assert not skipped and rec["status"] == "ok"


def test_a_bug_is_recorded_with_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, batch):
        raise RuntimeError("boom")

    monkeypatch.setattr(LateFusion, "forward", broken)
    rec, _ = execute(_spec(), tmp_path)
    assert rec["status"] == "failed" and rec["error"] == "RuntimeError: boom" and "Traceback" in rec["traceback"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "run_id": "x", "status": "ok", "spec": {},
                             "primary_metric": "accuracy", "metrics": {}}))
    with pytest.raises(MMBenchError, match="newer than this mmbench"):
        read_record(p)


def test_load_records_errors(tmp_path: Path) -> None:
    with pytest.raises(MMBenchError, match="does not exist"):
        load_records(tmp_path / "nope")
    with pytest.raises(MMBenchError, match="no run records"):
        load_records(tmp_path)


def test_historic_record_fixture_still_loads() -> None:
    """Records of schema version 1 (committed fixture) keep loading and tabulating."""
    from mmbench.report.tables import render

    recs = load_records(Path(__file__).parent / "fixtures" / "historic_results")
    assert {r["schema_version"] for r in recs} == {1}
    assert "late_fusion" in render(recs, "md")


def test_torch_threads_unchanged_by_default(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    execute(_spec(), tmp_path)
    assert torch.get_num_threads() == before

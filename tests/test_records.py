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
from mmbench.records import NewerSchema, atomic_write_bytes, load_records, parse_record, read_record, record_path
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
    assert not skipped and rec.status == "ok"
    path = record_path(tmp_path, spec)
    disk = read_record(path)
    assert disk == rec  # the typed record survives the JSON round trip unchanged
    assert disk.run_id == spec.run_id and disk.spec == spec.to_dict()
    raw = json.loads(path.read_text())
    for key in ("schema_version", "run_id", "status", "spec", "primary_metric", "metrics", "ceiling", "masks",
                "curves", "timing", "env", "started_at", "finished_at"):
        assert key in raw
    assert raw["schema_version"] == SCHEMA_VERSION
    assert set(raw["metrics"]) == {"val", "test", "test_by_pattern", "regret"}
    assert set(disk.metrics.test_by_pattern) == {"complete", "image_only", "tabular_only"}
    assert disk.masks["test"].hash and disk.timing.samples_per_second > 0 and disk.timing.parameters > 0
    assert path.with_suffix(".npz").is_file()
    again, skipped = execute(spec, tmp_path)
    assert skipped and again.metrics == disk.metrics  # cached result is reported, not dropped
    forced, skipped = execute(spec, tmp_path, force=True)
    assert not skipped and forced.started_at >= disk.started_at


def test_record_model_rejects_unknown_keys_and_writes_nan_as_null(tmp_path: Path) -> None:
    rec, _ = execute(_spec(), tmp_path)
    data = json.loads(rec.to_json())
    with pytest.raises(MMBenchError, match="not a valid run record"):
        parse_record({**data, "surprise": 1}, "x.json")
    nan = rec.model_copy(update={"ceiling": {"complete": float("nan")}})
    assert json.loads(nan.to_json())["ceiling"] == {"complete": None}


def test_same_spec_twice_gives_identical_metrics(tmp_path: Path) -> None:
    spec = _spec()
    a, _ = execute(spec, tmp_path / "a")
    b, _ = execute(spec, tmp_path / "b")
    assert a.metrics == b.metrics
    assert a.masks == b.masks


def test_masks_are_identical_across_methods(tmp_path: Path) -> None:
    a, _ = execute(_spec(), tmp_path)
    b, _ = execute(_spec(**{"params.dropout": 0.3}), tmp_path)
    assert a.run_id != b.run_id
    assert a.masks == b.masks


def test_nan_loss_fails_the_run_and_records_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_losses(self, batch, out):
        return {"task": out.logits.sum() * float("nan")}

    monkeypatch.setattr(LateFusion, "losses", nan_losses)
    rec, _ = execute(_spec(), tmp_path)
    assert rec.status == "failed" and "non-finite loss" in rec.error
    assert read_record(record_path(tmp_path, _spec())).status == "failed"
    monkeypatch.undo()
    rec, skipped = execute(_spec(), tmp_path)  # a failed record is re-run, not skipped
    assert not skipped and rec.status == "ok"


def test_a_bug_is_recorded_with_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, batch):
        raise RuntimeError("boom")

    monkeypatch.setattr(LateFusion, "forward", broken)
    rec, _ = execute(_spec(), tmp_path)
    assert rec.status == "failed" and rec.error == "RuntimeError: boom" and "Traceback" in rec.traceback


def test_newer_schema_is_refused_and_never_overwritten(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "run_id": "x", "status": "ok", "spec": {},
                             "primary_metric": "accuracy", "metrics": {}}))
    with pytest.raises(NewerSchema, match="newer than this mmbench"):
        read_record(p)
    spec = _spec()
    path = record_path(tmp_path, spec)
    path.parent.mkdir(parents=True)
    newer = json.dumps({"schema_version": SCHEMA_VERSION + 1, "run_id": spec.run_id})
    path.write_text(newer)
    for force in (False, True):
        with pytest.raises(NewerSchema):
            execute(spec, tmp_path, force=force)
    assert path.read_text() == newer


def test_load_records_errors_say_why(tmp_path: Path) -> None:
    with pytest.raises(MMBenchError, match="does not exist"):
        load_records(tmp_path / "nope")
    with pytest.raises(MMBenchError, match="no run records"):
        load_records(tmp_path)
    (tmp_path / "a.json").write_text('{"schema_version": 2, "run_id": "abc", "sta')  # truncated
    (tmp_path / "b.json").write_text(json.dumps({"schema_version": 99, "run_id": "x"}))
    with pytest.raises(MMBenchError, match=r"2 file\(s\) could not be read, 1 of a newer schema \(upgrade mmbench\)"):
        load_records(tmp_path)


def test_unreadable_and_failed_records_are_named_in_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    execute(_spec(), tmp_path)
    monkeypatch.setattr(LateFusion, "forward", lambda self, batch: (_ for _ in ()).throw(RuntimeError("boom")))
    execute(_spec(seed=1), tmp_path)
    (tmp_path / "junk.json").write_text("{not json")
    rs = load_records(tmp_path)
    assert len(rs.records) == 1 and len(rs.failed) == 1 and len(rs.skipped) == 1
    lines = rs.warnings()
    assert len(lines) == 2 and "unreadable" in lines[0] and "junk.json" in lines[0]
    assert "1 failed run(s) left out" in lines[1] and "boom" in lines[1]


@pytest.mark.parametrize("fixture", ["v1-early", "v1-8f2379f"])
def test_historic_records_still_load_and_table_identically(fixture: str) -> None:
    """Records of schema version 1 (committed fixtures: an early release and the last v1 commit) keep
    loading, and their tables are what the code that wrote them printed (golden files)."""
    from mmbench.report.tables import render

    here = Path(__file__).parent / "fixtures"
    rs = load_records(here / "historic_results" / fixture)
    assert len(rs.records) >= 2 and not rs.skipped
    assert all(r.spec["method"]["version"] == 0 for r in rs.records)  # made before code versions
    for fmt in ("md", "csv", "html"):
        assert render(rs.records, fmt) == (here / "golden" / f"{fixture}.{fmt}").read_text(), fmt


def test_output_files_follow_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        rec, _ = execute(_spec(), tmp_path)
    finally:
        os.umask(old)
    path = record_path(tmp_path, _spec())
    for p in (path, path.with_suffix(".npz")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_torch_threads_unchanged_by_default(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    execute(_spec(), tmp_path)
    assert torch.get_num_threads() == before

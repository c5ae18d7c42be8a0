"""Grid executors: local process pool, resume from the record store, grid manifest, record lock, and
Slurm through submitit (in-process ``debug`` cluster here; a real cluster in the ``slurm``-marked test)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from mmbench.config import RunSpec, resolve
from mmbench.errors import ConfigError, MMBenchError
from mmbench.executors import (
    GridManifest,
    Hooks,
    LocalExecutor,
    Outcome,
    RunContext,
    SequentialExecutor,
    available_cpus,
    grid_hash,
    read_manifest,
)
from mmbench.plan import Plan
from mmbench.protocols import MissingSpec
from mmbench.records import read_record, record_path, run_lock

FAST = {"train.epochs": 1, "data.n_samples": 160, "train.eval_batch_size": 64}


def tiny_spec(seed: int) -> RunSpec:
    return resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), seed, overrides=FAST)


def bad_spec() -> RunSpec:
    """A cell whose data is not there (bad input found inside the run): no record is written."""
    return resolve("late_fusion", "csv-example", MissingSpec("both", 0.5), 7, overrides={"train.epochs": 1})


def run_local(specs: list[RunSpec], out: Path, *, jobs: int = 2, protocol: str | None = "unit",
              on_done=None) -> list[Outcome]:
    return LocalExecutor(jobs).run(Plan(specs, protocol), RunContext(out), Hooks(on_done=on_done))


def run_sequential(specs: list[RunSpec], out: Path, protocol: str | None = "unit") -> list[Outcome]:
    return SequentialExecutor().run(Plan(specs, protocol), RunContext(out), Hooks())


def run_slurm_debug(specs: list[RunSpec], out: Path, messages: list[str], protocol: str = "unit") -> list[Outcome]:
    from mmbench.slurm import SlurmOptions, run_slurm

    return run_slurm(Plan(specs, protocol), RunContext(out), SlurmOptions(cluster="debug", poll_s=0),
                     Hooks(log=messages.append))


def manifest_of(out: Path, specs: list[RunSpec], name: str = "unit") -> dict:
    return read_manifest(out / "grids" / f"{name}-{grid_hash(specs)}.json")


def delete_record(out: Path, spec: RunSpec) -> None:
    path = record_path(out, spec)
    path.unlink()
    path.with_suffix(".npz").unlink()


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[RunSpec], list, list[int]]:
    """Two tiny cells plus one bad cell on the local executor with 2 workers (run once per module)."""
    out = tmp_path_factory.mktemp("local")
    specs = [tiny_spec(0), tiny_spec(1), bad_spec()]
    done: list[int] = []
    results = run_local(specs, out, jobs=2, on_done=lambda i, res: done.append(i))
    return out, specs, results, done


# ------------------------------------------------------------------------------------------- local
def test_local_two_workers_results_in_order_failure_isolated(local_grid) -> None:
    out, specs, results, done = local_grid
    assert len(results) == 3 and sorted(done) == [0, 1, 2]
    for spec, o in zip(specs[:2], results[:2], strict=True):
        assert o.status == "ok" and not o.skipped
        assert o.record.run_id == spec.run_id and o.record.labels.seed == spec.train_seed
        assert read_record(record_path(out, spec)).run_id == spec.run_id
    bad = results[2]
    assert bad.status == "error" and bad.record is None and "no data root" in bad.error
    assert not record_path(out, specs[2]).exists()  # bad input writes no record: a re-run retries it
    man = manifest_of(out, specs)
    assert man["name"] == "unit" and man["grid_hash"] == grid_hash(specs) and man["executor"] == "local"
    assert man["counts"] == {"error": 1, "ok": 2}
    # the CPUs are split between the workers (was ">= 1", which max(1, ...) made true whatever the split)
    assert man["extra"]["workers"] == 2 and man["extra"]["threads_per_worker"] == max(1, available_cpus() // 2)
    cells = man["cells"]
    assert [c["run_id"] for c in cells] == [s.run_id for s in specs]
    assert cells[0]["record"] == str(record_path(out, specs[0]).relative_to(out))
    assert "no data root" in cells[2]["error"] and cells[0]["metric"]["accuracy"] == results[0].record.test_value()


def test_resume_after_interruption_runs_only_the_missing_cell(local_grid, tmp_path: Path) -> None:
    src, specs, _, _ = local_grid
    out = tmp_path / "results"
    shutil.copytree(src, out)
    kept = record_path(out, specs[0])
    before = kept.stat().st_mtime_ns
    delete_record(out, specs[1])  # as if the grid was killed before this cell finished
    results = run_sequential(specs[:2], out)
    assert [o.skipped for o in results] == [True, False]
    assert kept.stat().st_mtime_ns == before  # the finished cell was loaded, not re-run
    assert results[1].status == "ok" and record_path(out, specs[1]).is_file()
    man = manifest_of(out, specs[:2])
    assert man["counts"] == {"cached": 1, "ok": 1} and man["executor"] == "sequential"


def test_all_cached_starts_no_worker(local_grid, monkeypatch) -> None:
    out, specs, _, _ = local_grid

    def no_pool(*a, **k):
        raise AssertionError("a worker pool was started for a fully cached grid")

    monkeypatch.setattr("mmbench.executors.cf.ProcessPoolExecutor", no_pool)
    results = run_local(specs[:2], out, jobs=2)
    assert all(o.skipped for o in results)


def test_worker_init_splits_threads_and_pins_one_gpu(monkeypatch) -> None:
    import queue

    import torch

    from mmbench.executors import _init_worker

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    q: queue.Queue = queue.Queue()
    for g in ("3", "5"):
        q.put(g)
    try:
        _init_worker(1, q)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and os.environ["OMP_NUM_THREADS"] == "1"
        assert torch.get_num_threads() == 1 and q.get() == "5"  # the next worker gets the next GPU
    finally:
        torch.set_num_threads(before)


def test_local_rejects_bad_jobs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--jobs"):
        LocalExecutor(0)
    with pytest.raises(ConfigError, match="--gpus"):
        LocalExecutor(1, ["a"])


# ------------------------------------------------------------------------------------------- manifest
def test_manifest_is_keyed_by_the_cell_set_and_keeps_history(tmp_path: Path) -> None:
    a, b = tiny_spec(0), tiny_spec(1)
    assert grid_hash([a, b]) == grid_hash([b, a]) != grid_hash([a])
    m = GridManifest([a, b], tmp_path, "my grid/x", "sequential", min_interval_s=0)
    assert m.path == tmp_path / "grids" / f"my_grid_x-{grid_hash([a, b])}.json"
    m.set(1, "submitted", job_id="42_1")
    m.flush()
    data = read_manifest(m.path)
    assert data["counts"] == {"pending": 1, "submitted": 1} and data["cells"][1]["job_id"] == "42_1"
    assert not list(m.path.parent.glob(".*.tmp"))  # atomic write left no temp file
    m2 = GridManifest([a, b], tmp_path, "my grid/x", "slurm")
    assert m2.previous_cell(1)["job_id"] == "42_1" and m2.data["invocations"] == 2
    assert m2.data["created_at"] == data["created_at"]
    m2.finish(0, Outcome(a, None, error="boom"))
    m2.flush()
    assert read_manifest(m2.path)["cells"][0]["status"] == "error"


# ------------------------------------------------------------------------------------------- lock
def test_record_lock_is_exclusive_and_held_during_execute(tmp_path: Path, monkeypatch) -> None:
    spec = tiny_spec(0)
    path = record_path(tmp_path, spec)
    with run_lock(path):
        with pytest.raises(Timeout):
            FileLock(path.with_name(f".{path.stem}.lock")).acquire(timeout=0.05)
    seen = {}

    def fake_locked(specs_, paths_, out_, **kw):
        try:  # a second worker on the same cell must wait while this one runs
            FileLock(paths_[0].with_name(f".{paths_[0].stem}.lock")).acquire(timeout=0.05)
            seen["held"] = False
        except Timeout:
            seen["held"] = True
        try:  # ... and on the same training
            FileLock(paths_[0].parent / f".train-{specs_[0].training_id}.lock").acquire(timeout=0.05)
            seen["training"] = False
        except Timeout:
            seen["training"] = True
        return [(None, False)]

    monkeypatch.setattr("mmbench.runner._execute_unit_locked", fake_locked)
    from mmbench.runner import execute

    execute(spec, tmp_path)
    assert seen == {"held": True, "training": True}


# ------------------------------------------------------------------------------------------- slurm
def test_slurm_debug_cluster_skips_finished_cells_before_submission(local_grid, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    src, specs, _, _ = local_grid
    out = tmp_path / "results"
    shutil.copytree(src, out)
    delete_record(out, specs[0])
    messages: list[str] = []
    results = run_slurm_debug(specs, out, messages)
    assert [o.status for o in results] == ["ok", "cached", "error"]
    assert any("submitted 2 cell(s)" in m for m in messages)  # the cached cell was never submitted
    assert results[2].record is None and "no data root" in results[2].error
    rec = read_record(record_path(out, specs[0]))  # read back from the store
    assert rec.run_id == specs[0].run_id and rec.status == "ok"
    man = manifest_of(out, specs)
    assert man["invocations"] == 2 and man["executor"] == "slurm"
    assert man["counts"] == {"cached": 1, "error": 1, "ok": 1}
    assert man["cells"][0]["job_id"] and man["cells"][1]["job_id"] is None
    assert (out / "slurm-logs").is_dir()
    # second invocation: nothing left to run except the bad cell
    messages.clear()
    again = run_slurm_debug(specs[:2], out, messages)
    assert all(o.skipped for o in again) and not any("submitted" in m for m in messages)


def test_slurm_options_map_to_submitit_parameters() -> None:
    from mmbench.slurm import SlurmOptions

    p = SlurmOptions(partition="gpu", time="90", gpus_per_node=1, cpus_per_task=8, mem_gb=32,
                     array_parallelism=4, account="acc", setup=("module load cuda",)).parameters(10)
    assert p == {"name": "mmbench", "slurm_array_parallelism": 4, "timeout_min": 90, "gpus_per_node": 1,
                 "cpus_per_task": 8, "mem_gb": 32, "slurm_partition": "gpu", "slurm_account": "acc",
                 "slurm_setup": ["module load cuda"]}
    assert SlurmOptions(time="1-12:00:00").parameters(2) == {"name": "mmbench", "slurm_array_parallelism": 2,
                                                             "slurm_time": "1-12:00:00"}
    for bad in ({"time": "2h"}, {"array_parallelism": 0}, {"cluster": "k8s"}, {"gpus_per_node": -1}):
        with pytest.raises(ConfigError):
            SlurmOptions(**bad)


def test_slurm_without_submitit_is_one_line_error(monkeypatch, tmp_path: Path) -> None:
    from mmbench.slurm import run_slurm

    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(MMBenchError, match=r"pip install 'mmbench\[slurm\]'"):
        run_slurm(Plan([tiny_spec(0)]), RunContext(tmp_path))


def fake_bin(tmp_path: Path, monkeypatch, scripts: dict[str, str]) -> None:
    """Put shell scripts named like Slurm commands first on PATH (and nothing else of Slurm's)."""
    d = tmp_path / "bin"
    d.mkdir()
    for name, body in scripts.items():
        f = d / name
        f.write_text("#!/bin/sh\n" + body + "\n")
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{d}:/usr/bin:/bin")
    monkeypatch.setattr("mmbench.slurm.shutil.which",
                        lambda cmd: str(d / cmd) if (d / cmd).exists() else None)


def test_no_slurm_reachable_is_one_line_error(monkeypatch, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    from mmbench.slurm import SlurmOptions, check_slurm, run_slurm

    fake_bin(tmp_path, monkeypatch, {})
    with pytest.raises(MMBenchError, match="no Slurm here"):
        run_slurm(Plan([tiny_spec(0)]), RunContext(tmp_path / "o"), SlurmOptions())
    shutil.rmtree(tmp_path / "bin")
    fake_bin(tmp_path, monkeypatch,
             {"sbatch": "exit 0", "sinfo": "echo 'Unable to contact slurm controller' >&2; exit 1"})
    with pytest.raises(MMBenchError, match="does not answer .*Unable to contact slurm controller"):
        check_slurm()
    shutil.rmtree(tmp_path / "bin")
    fake_bin(tmp_path, monkeypatch, {"sbatch": "exit 0", "sinfo": "printf 'debug*\\ngpu\\n'"})
    assert check_slurm("gpu") == ["debug", "gpu"]
    with pytest.raises(MMBenchError, match="no such partition.*known: debug, gpu"):
        check_slurm("a100")


def test_squeue_ids_and_lost_jobs(monkeypatch, tmp_path: Path) -> None:
    from mmbench import slurm

    fake_bin(tmp_path, monkeypatch, {"squeue": "printf '5_0 R\\n5_1 CD\\n5_2 PD\\n'"})
    assert slurm.squeue_ids(["5_0", "5_1", "5_2", "5_3"]) == {"5_0", "5_2"}

    class GoneJob:  # a job Slurm killed: no result file, no longer queued
        job_id = "5_3"

        class paths:  # noqa: N801 - mimics submitit's JobPaths
            folder = tmp_path
            result_pickle = tmp_path / "5_3_0_result.pkl"
            stderr = tmp_path / "5_3_0_log.err"

    spec = tiny_spec(0)
    man = GridManifest([spec], tmp_path / "o", None, "slurm", min_interval_s=0)
    results: list = [None]
    opts = slurm.SlurmOptions(poll_s=0)
    slurm._wait([spec], {0: GoneJob()}, tmp_path / "o", None, opts, man, results, None)
    o = results[0]
    assert o.status == "error" and o.record is None
    assert "ended without a result" in o.error and "5_3_0_log.err" in o.error
    assert man.data["cells"][0]["status"] == "error"


def test_reattach_live_jobs_of_an_interrupted_invocation(monkeypatch, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    import submitit

    from mmbench import slurm

    specs = [tiny_spec(0), tiny_spec(1)]
    m = GridManifest(specs, tmp_path, "g", "slurm", min_interval_s=0)
    m.set(0, "submitted", job_id="9_0")
    m.set(1, "submitted", job_id="9_1")
    m.flush()
    fake_bin(tmp_path, monkeypatch, {"squeue": "echo '9_1 R'"})  # 9_0 ended (lost or done), 9_1 still runs
    m2 = GridManifest(specs, tmp_path, "g", "slurm", min_interval_s=0)
    live = slurm._reattach(submitit, [0, 1], m2, tmp_path / "logs" / "%j")
    assert list(live) == [1] and live[1].job_id == "9_1"


def test_cli_slurm_flags_reach_the_executor(monkeypatch, capsys, tmp_path: Path) -> None:
    from mmbench.cli import main

    seen = {}

    def fake_run_slurm(plan, ctx, options, hooks):
        seen.update(n=len(plan), options=options)
        return []

    monkeypatch.setattr("mmbench.slurm.run_slurm", fake_run_slurm)
    monkeypatch.setattr(sys, "argv", [
        "mmbench", "run", "-m", "late_fusion", "-d", "synthetic-tiny", "--seeds", "0-1", "-o", str(tmp_path),
        "--executor", "slurm", "--slurm-partition", "gpu", "--slurm-time", "2:00:00", "--slurm-gpus", "1",
        "--slurm-array-parallelism", "3", "--slurm-log-dir", str(tmp_path / "logs")])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    o = seen["options"]
    assert seen["n"] == 2
    assert (o.partition, o.time, o.gpus_per_node, o.array_parallelism) == ("gpu", "2:00:00", 1, 3)
    assert o.log_dir == str(tmp_path / "logs") and o.cluster == "slurm"
    monkeypatch.setattr(sys, "argv", ["mmbench", "run", "-m", "late_fusion", "-d", "synthetic-tiny",
                                      "-o", str(tmp_path), "--executor", "slurm", "--slurm-time", "2h"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and "--slurm-time '2h'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- real Slurm
def _slurm_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slurm
@pytest.mark.skipif(not _slurm_answers(),
                    reason="no reachable Slurm (sbatch + sinfo); see scripts/slurm-single-node.sh")
def test_real_slurm_job_array_writes_both_records(tmp_path: Path, capsys) -> None:
    pytest.importorskip("submitit")
    from mmbench.slurm import SlurmOptions, run_slurm

    specs = [tiny_spec(0), tiny_spec(1)]
    t0 = time.perf_counter()
    messages: list[str] = []
    results = run_slurm(Plan(specs, "slurm-test"), RunContext(tmp_path),
                        SlurmOptions(time="15", cpus_per_task=1, poll_s=1.0), Hooks(log=messages.append))
    wall = time.perf_counter() - t0
    assert [o.status for o in results] == ["ok", "ok"], [o.error for o in results]
    for spec in specs:
        assert read_record(record_path(tmp_path, spec)).run_id == spec.run_id
    man = manifest_of(tmp_path, specs, "slurm-test")
    array = man["extra"]["array_job_id"]
    assert [c["job_id"] for c in man["cells"]] == [f"{array}_0", f"{array}_1"]  # one job array
    with capsys.disabled():
        train = [o.record.timing.train_seconds for o in results]
        print(f"\n[real slurm] 2-cell job array {array}: wall {wall:.1f} s (train {train} s); {messages[0]}")
    assert os.path.isdir(man["extra"]["log_dir"])
    assert json.loads((tmp_path / man["cells"][0]["record"]).read_text())["status"] == "ok"

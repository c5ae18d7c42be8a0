"""Slurm executor: one submitit job array per grid (``pip install 'mmbench[slurm]'``).

Each array task runs :func:`mmbench.runner.execute_unit` for one *unit* of the plan (the cells that
share one training, e.g. every test rate of a sweep: one training, one record per cell), given as
plain spec dicts. The parent waits, then reads each cell's outcome back from its record file (the
result store is the source of truth; the job's own return value only carries errors that left no
record). Resume: cells with an ``ok`` record are skipped before submission (a unit keeps only its
unfinished cells), and cells whose job from an earlier, interrupted invocation of the same grid is
still queued or running are re-attached, not resubmitted. The training and record file locks
(:mod:`mmbench.checkpoint`, ``records.run_lock``) keep two jobs from running one cell at once.

Tests use ``cluster="debug"`` (submitit runs each job in-process); ``"local"`` is submitit's
queue-less local executor (every job starts at once: keep it for tiny grids).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, MMBenchError
from .executors import GridManifest, Hooks, Outcome, RunContext, describe_error, split_cached
from .plan import Plan
from .records import RunRecord, existing_ok, read_record, record_path
from .spec import RunSpec

CLUSTERS = ("slurm", "debug", "local")
_TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each array task and how the grid is submitted (``--slurm-*`` flags)."""

    partition: str | None = None
    time: str = "60"  # minutes, or a Slurm time string such as 2:00:00 or 1-00:00:00
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int = 16  # at most this many array tasks run at once
    log_dir: str | None = None  # default <output_dir>/slurm-logs (submitit folder, one sub-folder per job)
    account: str | None = None
    qos: str | None = None
    setup: tuple[str, ...] = ()  # shell lines run before the task (e.g. module load, source venv)
    additional: dict[str, Any] = field(default_factory=dict)  # extra sbatch options
    max_requeues: int = 3  # requeues after preemption / time-out (the cell restarts from scratch)
    cluster: str = "slurm"  # "debug" (in-process, tests) or "local"
    poll_s: float = 10.0

    def __post_init__(self) -> None:
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"slurm cluster {self.cluster!r}: expected one of {', '.join(CLUSTERS)}")
        if not _TIME_RE.match(str(self.time)):
            raise ConfigError(f"--slurm-time {self.time!r}: expected minutes (90) or a Slurm time such as "
                              "2:00:00 or 1-12:00:00")
        if self.array_parallelism < 1:
            raise ConfigError(f"--slurm-array-parallelism must be >= 1, got {self.array_parallelism}")
        if self.gpus_per_node < 0 or (self.cpus_per_task is not None and self.cpus_per_task < 1):
            raise ConfigError("--slurm-gpus must be >= 0 and --slurm-cpus >= 1")

    def parameters(self, n_jobs: int) -> dict[str, Any]:
        """Keyword arguments of ``AutoExecutor.update_parameters`` for an array of ``n_jobs`` tasks."""
        p: dict[str, Any] = {"name": "mmbench", "slurm_array_parallelism": min(self.array_parallelism,
                                                                               max(n_jobs, 1))}
        t = str(self.time)
        if t.isdigit():
            p["timeout_min"] = int(t)
        else:
            p["slurm_time"] = t
        if self.gpus_per_node:
            p["gpus_per_node"] = self.gpus_per_node
        if self.cpus_per_task:
            p["cpus_per_task"] = self.cpus_per_task
        if self.mem_gb:
            p["mem_gb"] = self.mem_gb
        for key, value in (("partition", self.partition), ("account", self.account), ("qos", self.qos)):
            if value:
                p[f"slurm_{key}"] = value
        if self.setup:
            p["slurm_setup"] = list(self.setup)
        if self.additional:
            p["slurm_additional_parameters"] = dict(self.additional)
        return p


class SlurmUnit:
    """The job of one unit of the grid (cells sharing a training): picklable, and checkpointable
    (requeued whole on preemption/time-out; cells it finished are then loaded, not re-run).

    Returns a small dict per cell, keyed by run id (or one error dict for the whole unit); the
    record files it writes are what the parent reads.
    """

    def __call__(self, spec_dicts: list[dict[str, Any]], output_dir: str, force: bool, root: str | None,
                 protocol: str | None, tracker: str | None = None, tracker_uri: str | None = None
                 ) -> dict[str, Any]:
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus and cpus.isdigit():
            import torch

            torch.set_num_threads(int(cpus))
        from .runner import execute_unit
        from .tracking import make_tracker

        specs = [RunSpec.from_dict(d) for d in spec_dicts]
        try:
            done = execute_unit(specs, output_dir, force=force, root=root, protocol=protocol,
                                tracker=make_tracker(tracker, tracker_uri, output_dir))
        except Exception as exc:  # bad input: no record was written; report it to the parent
            return {"status": "error", "skipped": False, "error": describe_error(exc),
                    "traceback": traceback.format_exc()}
        return {"cells": {s.run_id: {"status": rec.status, "skipped": skipped, "error": rec.error}
                          for s, (rec, skipped) in zip(specs, done, strict=True)}}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit hook on preemption/time-out: resubmit the same call (no mid-run checkpoint)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def import_submitit() -> Any:
    """``submitit``, or a one-line error naming the extra to install."""
    try:
        import submitit
    except ImportError:
        raise MMBenchError("--executor slurm needs submitit: pip install 'mmbench[slurm]' "
                           "(or pip install submitit)") from None
    return submitit


def check_slurm(partition: str | None = None) -> list[str]:
    """The cluster's partitions; a one-line error if no Slurm answers or ``partition`` is unknown."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise MMBenchError("--executor slurm: no Slurm here (sbatch/sinfo not on PATH); run from a login "
                           "node, or start a single-node Slurm with scripts/slurm-single-node.sh")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise MMBenchError("--executor slurm: `sinfo` gave no answer in 60 s (is slurmctld up?)") from None
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise MMBenchError(f"--executor slurm: Slurm does not answer (`sinfo`: {msg})")
    parts = [p.strip().rstrip("*") for p in proc.stdout.split() if p.strip()]
    if partition and partition not in parts:
        raise MMBenchError(f"--slurm-partition {partition!r}: no such partition (known: {', '.join(parts)})")
    return parts


#: squeue compact states of jobs that will not run again
_ENDED = {"BF", "CA", "CD", "DL", "F", "NF", "OOM", "PR", "TO", "RV", "SE"}


def squeue_ids(job_ids: list[str]) -> set[str] | None:
    """Which of ``job_ids`` (``123`` or ``123_4``) Slurm still has queued or running; None if
    ``squeue`` fails. Works without accounting (``sacct``), unlike submitit's own watcher."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return set()
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i %t", "-j", ",".join(arrays)],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # ids Slurm has already forgotten make squeue fail ("Invalid job id") when they are all it got
        return set() if "Invalid job id" in proc.stderr else None
    rows = (line.split() for line in proc.stdout.splitlines())
    return {r[0] for r in rows if r and (len(r) < 2 or r[1] not in _ENDED)}


def _log_hint(job: Any) -> str:
    try:
        return f"; log {job.paths.stderr}"
    except Exception:  # noqa: BLE001 - best effort only
        return ""


class SlurmExecutor:
    """Submits the unfinished units of a plan as one Slurm job array (submitit) and waits for them."""

    name = "slurm"

    def __init__(self, options: SlurmOptions | None = None) -> None:
        self.options = options or SlurmOptions()

    def run(self, plan: Plan, ctx: RunContext, hooks: Hooks) -> list[Outcome]:
        """See :func:`run_slurm`."""
        return run_slurm(plan, ctx, self.options, hooks)


def run_slurm(plan: Plan, ctx: RunContext, options: SlurmOptions | None = None,
              hooks: Hooks | None = None) -> list[Outcome]:
    """Submit the cells without an ``ok`` record as one Slurm job array and wait for them.

    Returns one :class:`Outcome` per cell in order. A job that ends without a record (bad input,
    killed by Slurm, lost) yields an outcome with ``error`` naming its log file.
    """
    opts = options or SlurmOptions()
    hooks = hooks or Hooks()
    say, on_done = hooks.log, hooks.on_done
    specs, protocol, force, root = plan.specs, plan.protocol, ctx.force, ctx.root
    submitit = import_submitit()
    if opts.cluster == "slurm":
        check_slurm(opts.partition)
    output_dir = Path(ctx.output_dir).resolve()
    log_dir = Path(opts.log_dir).resolve() if opts.log_dir else output_dir / "slurm-logs"
    folder = log_dir / "%j"
    results: list[Outcome | None] = [None] * len(specs)
    manifest = GridManifest(specs, output_dir, protocol, "slurm")
    manifest.data["extra"] = {"cluster": opts.cluster, "log_dir": str(log_dir), "array_job_id": None}
    units = split_cached(plan, RunContext(output_dir, force, root), manifest, results, hooks)
    todo = [i for unit in units for i in unit]
    live: dict[int, Any] = {}
    if todo and opts.cluster == "slurm" and not force:
        live = _reattach(submitit, todo, manifest, folder)
        if live:
            prev_extra = (manifest.previous or {}).get("extra") or {}
            manifest.data["extra"]["array_job_id"] = prev_extra.get("array_job_id")
            say(f"re-attached {len(live)} cell(s) still queued or running from an earlier invocation")
    submit = [[i for i in unit if i not in live] for unit in units]
    submit = [unit for unit in submit if unit]
    if submit:
        executor = submitit.AutoExecutor(folder=folder, cluster=opts.cluster,
                                         slurm_max_num_timeout=opts.max_requeues)
        executor.update_parameters(**opts.parameters(len(submit)))
        n = len(submit)
        try:
            jobs = executor.map_array(SlurmUnit(), [[specs[i].to_dict() for i in unit] for unit in submit],
                                      [str(output_dir)] * n, [force] * n, [root] * n, [protocol] * n,
                                      [ctx.tracker] * n, [ctx.tracker_uri] * n)
        except Exception as exc:  # sbatch refused the array (bad partition, limits, ...)
            msg = " ".join(str(exc).split())[:500]
            raise MMBenchError(f"--executor slurm: submission failed: {msg}") from None
        for unit, job in zip(submit, jobs, strict=True):
            for i in unit:
                live[i] = job
                manifest.set(i, "submitted", job_id=str(job.job_id))
        array_id = str(jobs[0].job_id).split("_")[0]
        manifest.data["extra"]["array_job_id"] = array_id
        manifest.flush()
        at_once = opts.parameters(n)["slurm_array_parallelism"]
        what = f"Slurm job {array_id}" if opts.cluster == "slurm" else f"submitit {opts.cluster} jobs"
        cells = sum(len(u) for u in submit)
        say(f"submitted {cells} cell(s) in {n} training(s) as {what} (at most {at_once} at once); logs in "
            f"{log_dir}; manifest {manifest.path}")
    try:
        _wait(specs, live, output_dir, protocol, opts, manifest, results, on_done)
    except KeyboardInterrupt:
        ids = sorted({str(j.job_id).split("_")[0] for j in live.values()})
        say(f"interrupted: {len(live)} cell(s) keep running on Slurm (job {', '.join(ids)}); re-run the same "
            f"command to collect them, or scancel {' '.join(ids)}")
        raise
    finally:
        manifest.flush()
    return [r for r in results if r is not None]


def _reattach(submitit: Any, todo: list[int], manifest: GridManifest, folder: Path) -> dict[int, Any]:
    """Jobs of an earlier invocation of this grid that Slurm still runs, by cell index."""
    prev = {i: c["job_id"] for i in todo
            if (c := manifest.previous_cell(i)) and c.get("status") == "submitted" and c.get("job_id")}
    alive = squeue_ids(list(prev.values())) if prev else set()
    live = {}
    for i, jid in prev.items():
        if alive and jid in alive:
            live[i] = submitit.SlurmJob(folder=folder, job_id=jid)
            manifest.set(i, "submitted", job_id=jid)
    return live


def _wait(specs: list[RunSpec], live: dict[int, Any], output_dir: Path, protocol: str | None,
          opts: SlurmOptions, manifest: GridManifest, results: list[Outcome | None],
          on_done: Callable[[int, Outcome], None] | None) -> None:
    """Poll until every live job is finished or gone, reading each outcome from its record."""
    gone: dict[int, int] = {}
    while live:
        for i, job in list(live.items()):
            if _finished(job, opts.cluster):
                results[i] = _collect(specs[i], job, output_dir, protocol)
                del live[i]
                manifest.finish(i, results[i])
                if on_done:
                    on_done(i, results[i])
        if not live:
            break
        if opts.cluster == "slurm":
            # without accounting (sacct), submitit never learns that a job was killed: ask squeue
            known = squeue_ids([str(j.job_id) for j in live.values()])
            for i, job in list(live.items()):
                if known is None or str(job.job_id) in known or _finished(job, opts.cluster):
                    gone.pop(i, None)
                    continue
                gone[i] = gone.get(i, 0) + 1
                if gone[i] >= 3:
                    del live[i]
                    why = (f"Slurm job {job.job_id} ended without a result (time limit, memory, node failure "
                           f"or scancel?){_log_hint(job)}")
                    results[i] = _collect(specs[i], None, output_dir, protocol, why)
                    manifest.finish(i, results[i])
                    if on_done:
                        on_done(i, results[i])
        time.sleep(opts.poll_s)


def _finished(job: Any, cluster: str) -> bool:
    """Whether ``job`` left its result file. On Slurm this avoids submitit's ``done()``, which calls
    ``sacct`` (missing without accounting); jobs that die without a result are found via squeue."""
    if cluster != "slurm":
        return bool(job.done())  # debug: runs the job in-process now
    folder = job.paths.folder
    try:
        folder.chmod(folder.stat().st_mode)  # refresh NFS attribute caches
    except OSError:
        pass
    return job.paths.result_pickle.exists()


def _collect(spec: RunSpec, job: Any, output_dir: Path, protocol: str | None,
             lost: str | None = None) -> Outcome:
    """The outcome of a finished job, read back from the store."""
    out: dict[str, Any] = {"status": "error", "skipped": False, "error": lost}
    if job is not None:
        try:
            out = job.result()
        except Exception as exc:  # the job crashed or was killed: submitit tells why
            out = {"status": "error", "skipped": False,
                   "error": f"Slurm job {job.job_id} failed: {describe_error(exc)}{_log_hint(job)}"}
        if "cells" in out:  # a unit's job: this cell's part
            out = out["cells"].get(spec.run_id) or {"status": "error", "error": "the unit's job did not run this cell"}
    path = record_path(output_dir, spec)
    if out.get("status") != "error":
        rec = existing_ok(path, spec.run_id) or _read_same(path, spec.run_id)
        if rec is not None:
            return Outcome(spec, rec, bool(out.get("skipped")))
        out = {"error": f"job finished but its record {path} is missing or unreadable"}
    return Outcome(spec, None, error=out.get("error") or "unknown error", traceback=out.get("traceback"))


def _read_same(path: Path, run_id: str) -> RunRecord | None:
    try:
        rec = read_record(path)
    except MMBenchError:
        return None
    return rec if rec.run_id == run_id else None

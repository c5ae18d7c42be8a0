"""Grid execution behind one :class:`Executor` interface: sequential (default, CI), a local process
pool, and Slurm (:mod:`mmbench.slurm`).

Resume lives in the result store (records are keyed by the spec hash), so any executor can be
killed and restarted: finished cells are loaded, not re-run, and are skipped before any worker or
job is started. Every executor keeps a grid manifest, ``<output_dir>/grids/<name>-<hash8>.json``,
listing the planned cells with their record paths and status, rewritten atomically as runs finish.
It is a view for humans and tools; the records stay the source of truth.

One policy for failures, whatever the executor: a run that fails (non-finite loss, a bug) writes a
``failed`` record; bad input discovered inside a run (a dataset that is not there, weights that cannot
be downloaded), a dead worker or a lost job writes nothing for that cell, which ends as an
:class:`Outcome` with ``error`` set. Either way the other cells go on; the command reports every
error in one line each at the end (exit 2 for errors, 1 for failed runs).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import hashlib
import json
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError, MMBenchError
from .plan import Plan
from .records import RunRecord, atomic_write_bytes, existing_ok, record_path
from .spec import RunSpec

EXECUTORS = ("sequential", "local", "slurm")
MANIFEST_KIND = "mmbench-grid"
MANIFEST_VERSION = 1


@dataclass
class Outcome:
    """How one planned cell ended: its record (``None`` if it wrote none) and why not."""

    spec: RunSpec
    record: RunRecord | None
    skipped: bool = False
    error: str | None = None
    traceback: str | None = None

    @property
    def status(self) -> str:
        """``cached`` (record found before running), ``ok`` / ``failed`` (the record's), or ``error``."""
        if self.record is None:
            return "error"
        return "cached" if self.skipped else self.record.status


OnDone = Callable[[int, Outcome], None]


@dataclass
class Hooks:
    """Progress callbacks of a grid (all optional)."""

    on_start: Callable[[int, RunSpec], None] | None = None
    on_epoch: Callable[[int, RunSpec], Callable[[dict[str, Any]], None] | None] | None = None
    on_done: OnDone | None = None
    log: Callable[[str], None] = field(default=lambda msg: None)


@dataclass(frozen=True)
class RunContext:
    """Where and how the cells run."""

    output_dir: Path
    force: bool = False
    root: str | None = None
    #: optional experiment tracker (``"mlflow"``) and its URI (:mod:`mmbench.tracking`)
    tracker: str | None = None
    tracker_uri: str | None = None


class Executor(Protocol):
    """Runs the cells of a plan and returns one :class:`Outcome` per cell, in plan order."""

    name: str

    def run(self, plan: Plan, ctx: RunContext, hooks: Hooks) -> list[Outcome]:
        """Run (or load) every cell of ``plan``."""
        ...


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def available_cpus() -> int:
    """CPUs this process may use (affinity mask / cgroup-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def describe_error(exc: BaseException) -> str:
    """One line for a cell that produced no record."""
    if isinstance(exc, cf.process.BrokenProcessPool):
        return "worker process died (killed, or out of memory?); re-run the same command to resume"
    if isinstance(exc, MMBenchError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


# ------------------------------------------------------------------------------------------ manifest
def grid_hash(specs: list[RunSpec]) -> str:
    """8 hex digits identifying the set of cells (order-independent)."""
    return hashlib.sha256("\n".join(sorted(s.run_id for s in specs)).encode()).hexdigest()[:8]


class GridManifest:
    """``<output_dir>/grids/<name>-<hash8>.json``: planned cells, their files and status.

    Cell status: ``pending`` (to run), ``running`` (in this process), ``submitted`` (Slurm, with
    ``job_id``), ``cached`` (record found before running), ``ok`` / ``failed`` (the record's status),
    ``error`` (no record: bad input, dead worker, lost job; ``error`` says why), ``interrupted`` (the
    command stopped before the cell finished). Rewrites are atomic and throttled to one per
    ``min_interval_s`` (``flush`` forces one).
    """

    def __init__(self, specs: list[RunSpec], output_dir: str | Path, name: str | None, executor: str,
                 min_interval_s: float = 0.5) -> None:
        self.output_dir = Path(output_dir)
        self.name = _safe_name(name or "adhoc")
        self.hash = grid_hash(specs)
        self.path = self.output_dir / "grids" / f"{self.name}-{self.hash}.json"
        self.min_interval_s = min_interval_s
        self._last_write = 0.0
        self._dirty = False
        self.previous = self._read_previous()
        self.data: dict[str, Any] = {
            "kind": MANIFEST_KIND, "manifest_version": MANIFEST_VERSION, "name": self.name,
            "grid_hash": self.hash, "executor": executor,
            "created_at": (self.previous or {}).get("created_at", _now()), "updated_at": _now(),
            "invocations": int((self.previous or {}).get("invocations", 0)) + 1,
            "output_dir": str(self.output_dir.resolve()), "counts": {}, "extra": {},
            "cells": [self._cell(i, s) for i, s in enumerate(specs)],
        }

    def _read_previous(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) and data.get("kind") == MANIFEST_KIND else None

    def previous_cell(self, i: int) -> dict[str, Any] | None:
        """Cell ``i`` as the last invocation of this grid left it (same run id), if any."""
        cells = (self.previous or {}).get("cells") or []
        cell = cells[i] if i < len(cells) else None
        return cell if cell and cell.get("run_id") == self.data["cells"][i]["run_id"] else None

    def _cell(self, i: int, spec: RunSpec) -> dict[str, Any]:
        rec = record_path(self.output_dir, spec)
        return {
            "index": i, "run_id": spec.run_id, "method": spec.label, "dataset": spec.dataset.name,
            "cell": spec.missing.label("train"), "test": spec.missing.label("test"),
            "seed": spec.train_seed, "record": str(rec.relative_to(self.output_dir)),
            "predictions": str(rec.with_suffix(".npz").relative_to(self.output_dir)),
            "status": "pending", "job_id": None, "error": None, "metric": None, "finished_at": None,
        }

    def set(self, i: int, status: str, **fields: Any) -> None:
        """Update cell ``i`` and write (throttled)."""
        self.data["cells"][i].update(status=status, **fields)
        self._dirty = True
        self.write()

    def finish(self, i: int, outcome: Outcome) -> None:
        """Record the outcome of cell ``i``."""
        rec = outcome.record
        value = rec.test_value() if rec is not None else None
        self.set(i, outcome.status, error=outcome.error or (rec.error if rec else None),
                 metric=None if value is None else {rec.primary_metric: value},
                 finished_at=rec.finished_at if rec else _now())

    def close(self) -> None:
        """Mark cells still ``running`` as ``interrupted`` and write: a manifest never keeps a cell
        ``running`` after its process has finished."""
        for c in self.data["cells"]:
            if c["status"] == "running":
                c["status"] = "interrupted"
                self._dirty = True
        self.flush()

    def write(self, force: bool = False) -> None:
        """Atomically rewrite the manifest (at most once per ``min_interval_s`` unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval_s:
            return
        counts: dict[str, int] = {}
        for c in self.data["cells"]:
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        self.data["counts"] = dict(sorted(counts.items()))
        self.data["updated_at"] = _now()
        atomic_write_bytes(self.path, (json.dumps(self.data, indent=1) + "\n").encode())
        self._last_write, self._dirty = now, False

    def flush(self) -> None:
        """Write now if anything changed since the last write."""
        if self._dirty or not self.path.exists():
            self.write(force=True)


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60] or "adhoc"


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Load a grid manifest written by any executor."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MMBenchError(f"{path}: not a readable grid manifest ({exc})") from None
    if data.get("kind") != MANIFEST_KIND:
        raise MMBenchError(f"{path}: not a grid manifest (kind {data.get('kind')!r})")
    return data


def split_cached(plan: Plan, ctx: RunContext, manifest: GridManifest, results: list[Outcome | None],
                 hooks: Hooks) -> list[list[int]]:
    """Fill ``results`` with finished cells (loaded from their records); return the units left to run
    (each holding only its unfinished cells)."""
    todo = []
    for unit in plan.units():
        left = []
        for i in unit:
            spec = plan.specs[i]
            rec = None if ctx.force else existing_ok(record_path(ctx.output_dir, spec), spec.run_id)
            if rec is None:
                left.append(i)
                continue
            results[i] = Outcome(spec, rec, skipped=True)
            manifest.finish(i, results[i])
            if hooks.on_done:
                hooks.on_done(i, results[i])
        if left:
            todo.append(left)
    manifest.flush()
    return todo


def run_unit(specs: list[RunSpec], ctx: RunContext, protocol: str | None,
             on_start: Callable[[int, RunSpec], None] | None = None,
             on_epoch: Callable[[int, RunSpec], Callable[[dict[str, Any]], None] | None] | None = None
             ) -> list[Outcome]:
    """Run the cells of one unit in this process: one training, one record per cell
    (:func:`mmbench.runner.execute_unit`). Bad input ends every cell of the unit (they share it)."""
    from .runner import execute_unit
    from .tracking import make_tracker

    try:
        done = execute_unit(specs, ctx.output_dir, force=ctx.force, root=ctx.root, protocol=protocol,
                            on_start=(lambda k: on_start(k, specs[k])) if on_start else None,
                            on_epoch=(lambda k: on_epoch(k, specs[k])) if on_epoch else None,
                            tracker=make_tracker(ctx.tracker, ctx.tracker_uri, ctx.output_dir))
    except MMBenchError as exc:
        return [Outcome(spec, None, error=describe_error(exc)) for spec in specs]
    return [Outcome(spec, rec, skipped) for spec, (rec, skipped) in zip(specs, done, strict=True)]


# ------------------------------------------------------------------------------------------ sequential
class SequentialExecutor:
    """Runs the cells one after the other in this process (the default; what CI uses)."""

    name = "sequential"

    def run(self, plan: Plan, ctx: RunContext, hooks: Hooks) -> list[Outcome]:
        """Run every unfinished unit in order."""
        results: list[Outcome | None] = [None] * len(plan)
        manifest = GridManifest(plan.specs, ctx.output_dir, plan.protocol, self.name)
        try:
            for unit in split_cached(plan, ctx, manifest, results, hooks):
                for i in unit:
                    manifest.set(i, "running")

                def start(k: int, spec: RunSpec, unit: list[int] = unit) -> None:
                    if hooks.on_start:
                        hooks.on_start(unit[k], spec)

                def epoch(k: int, spec: RunSpec, unit: list[int] = unit) -> Any:
                    return hooks.on_epoch(unit[k], spec) if hooks.on_epoch else None

                outcomes = run_unit([plan.specs[i] for i in unit], ctx, plan.protocol, start, epoch)
                for i, outcome in zip(unit, outcomes, strict=True):
                    results[i] = outcome
                    manifest.finish(i, outcome)
                    if hooks.on_done:
                        hooks.on_done(i, outcome)
        finally:
            manifest.close()
        return [r for r in results if r is not None]


# ------------------------------------------------------------------------------------------ local pool
def _init_worker(threads: int, gpu_queue: Any) -> None:
    """Pool initializer: split CPU threads evenly; pin one GPU per worker when ``--gpus`` is given."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())
    import torch

    torch.set_num_threads(threads)


def _run_unit_in_worker(spec_dicts: list[dict[str, Any]], output_dir: str, force: bool, root: str | None,
                        protocol: str | None, tracker: str | None = None, tracker_uri: str | None = None
                        ) -> list[tuple[str | None, bool, str | None]]:
    """Worker entry point (picklable): the unit's outcomes as (record JSON, skipped, error)."""
    specs = [RunSpec.from_dict(d) for d in spec_dicts]
    outcomes = run_unit(specs, RunContext(Path(output_dir), force, root, tracker, tracker_uri), protocol)
    return [(o.record.model_dump_json() if o.record else None, o.skipped, o.error) for o in outcomes]


class LocalExecutor:
    """Runs units in ``jobs`` spawned worker processes; results come back in plan order.

    CPU threads are split evenly between workers; with ``gpus`` (e.g. ``["0", "1"]``) worker k sees
    only ``CUDA_VISIBLE_DEVICES=gpus[k % len(gpus)]``. Each worker imports torch once (a few seconds),
    so the pool pays off for runs of a minute or more, with at most one worker per core.
    """

    name = "local"

    def __init__(self, jobs: int | None = None, gpus: list[str] | None = None) -> None:
        jobs = available_cpus() if jobs is None else jobs
        if jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {jobs}")
        if gpus is not None and (not gpus or any(not g.strip().isdigit() for g in gpus)):
            raise ConfigError(f"--gpus {','.join(gpus)!r}: expected a list of device ids like 0,1")
        if gpus:
            import torch

            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            missing = [g for g in gpus if int(g) >= n]
            if missing:
                raise ConfigError(f"--gpus {','.join(gpus)}: this machine has {n} CUDA device(s)"
                                  + (f" (ids 0..{n - 1})" if n else "; leave out --gpus to run on the CPU"))
        self.jobs, self.gpus = jobs, gpus

    def run(self, plan: Plan, ctx: RunContext, hooks: Hooks) -> list[Outcome]:
        """Submit every unfinished unit to the pool and collect outcomes as they finish."""
        from .records import RunRecord

        results: list[Outcome | None] = [None] * len(plan)
        manifest = GridManifest(plan.specs, ctx.output_dir, plan.protocol, self.name)
        todo = split_cached(plan, ctx, manifest, results, hooks)
        if todo:
            workers = min(self.jobs, len(todo))
            threads = max(1, available_cpus() // workers)
            mpctx = mp.get_context("spawn")
            gpu_queue = None
            if self.gpus:
                gpu_queue = mpctx.Queue()
                for k in range(workers):
                    gpu_queue.put(self.gpus[k % len(self.gpus)])
            manifest.data["extra"] = {"workers": workers, "threads_per_worker": threads, "gpus": self.gpus}
            pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mpctx, initializer=_init_worker,
                                          initargs=(threads, gpu_queue))
            try:
                futs = {pool.submit(_run_unit_in_worker, [plan.specs[i].to_dict() for i in unit],
                                    str(ctx.output_dir), ctx.force, ctx.root, plan.protocol, ctx.tracker,
                                    ctx.tracker_uri): unit
                        for unit in todo}
                for unit in todo:
                    for i in unit:
                        manifest.set(i, "running")
                for fut in cf.as_completed(futs):
                    unit = futs[fut]
                    try:
                        got = [(RunRecord.model_validate_json(r) if r else None, s, e) for r, s, e in fut.result()]
                        outs = [Outcome(plan.specs[i], r, s, e) for i, (r, s, e) in zip(unit, got, strict=True)]
                    except Exception as exc:  # a dead worker
                        tb = "".join(traceback.format_exception(exc))
                        outs = [Outcome(plan.specs[i], None, error=describe_error(exc), traceback=tb) for i in unit]
                    for i, outcome in zip(unit, outs, strict=True):
                        results[i] = outcome
                        manifest.finish(i, outcome)
                        if hooks.on_done:
                            hooks.on_done(i, outcome)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            finally:
                manifest.close()
            pool.shutdown()
        else:
            manifest.close()
        return [r for r in results if r is not None]


def make_executor(name: str, *, jobs: int | None = None, gpus: list[str] | None = None,
                  slurm: Any = None) -> Executor:
    """The executor called ``name`` (``sequential``, ``local``, ``slurm``) with its options."""
    if name == "sequential":
        if gpus:
            raise ConfigError("--gpus is for --executor local (one GPU per worker); with sequential use "
                              "--set train.device=cuda:N")
        return SequentialExecutor()
    if name == "local":
        return LocalExecutor(jobs, gpus)
    if name == "slurm":
        if gpus:
            raise ConfigError("--gpus is for --executor local; on Slurm use --slurm-gpus")
        from .slurm import SlurmExecutor

        return SlurmExecutor(slurm)
    raise ConfigError(f"--executor {name!r}: expected one of {', '.join(EXECUTORS)}")

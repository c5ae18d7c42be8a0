"""Grid execution: sequential (default, CI), local process pool, and Slurm (``mmbench.slurm``).

Resume lives in the result store (records are keyed by the spec hash), so any executor can be
killed and restarted: finished cells are loaded, not re-run, and are skipped before any worker or
job is started. Every executor keeps a grid manifest, ``<output_dir>/grids/<name>-<hash8>.json``,
listing the planned cells with their record paths and status, rewritten atomically as runs finish.
It is a view for humans and tools; the records stay the source of truth.
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
from pathlib import Path
from typing import Any

from .config import RunSpec
from .errors import ConfigError, MMBenchError
from .records import atomic_write_bytes, existing_ok, record_path

EXECUTORS = ("sequential", "local", "slurm")
MANIFEST_KIND = "mmbench-grid"
MANIFEST_VERSION = 1

Result = tuple[dict[str, Any], bool]
OnDone = Callable[[int, Result], None]


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
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def stub_record(spec: RunSpec, protocol: str | None, error: str, tb: str | None = None) -> dict[str, Any]:
    """In-memory ``failed`` record for a cell that wrote none (bad input in a worker, a dead worker,
    a lost Slurm job). Never written to the store, so a re-run retries the cell."""
    from .runner import run_labels

    return {
        "schema_version": spec.schema_version, "run_id": spec.run_id, "status": "failed", "error": error,
        "labels": run_labels(spec, protocol),
        "spec": spec.to_dict(), "primary_metric": spec.dataset["primary_metric"], "metrics": {},
        "ceiling": None, "timing": {}, "traceback": tb, "stub": True,
    }


# ------------------------------------------------------------------------------------------ manifest
def grid_hash(specs: list[RunSpec]) -> str:
    """8 hex digits identifying the set of cells (order-independent)."""
    return hashlib.sha256("\n".join(sorted(s.run_id for s in specs)).encode()).hexdigest()[:8]


class GridManifest:
    """``<output_dir>/grids/<name>-<hash8>.json``: planned cells, their files and status.

    Cell status: ``pending`` (to run), ``running`` (sequential only), ``submitted`` (Slurm, with
    ``job_id``), ``cached`` (record found before running), ``ok`` / ``failed`` (the record's status),
    ``error`` (no record: bad input, dead worker, lost job; ``error`` says why). Rewrites are atomic
    and throttled to one per ``min_interval_s`` (``flush`` forces one).
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
        except (OSError, json.JSONDecodeError):
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
            "index": i, "run_id": spec.run_id, "method": spec.method["name"], "dataset": spec.dataset["name"],
            "cell": spec.missing_spec.label("train"), "test": spec.missing_spec.label("test"),
            "seed": spec.train_seed, "record": str(rec.relative_to(self.output_dir)),
            "predictions": str(rec.with_suffix(".npz").relative_to(self.output_dir)),
            "status": "pending", "job_id": None, "error": None, "metric": None, "finished_at": None,
        }

    def set(self, i: int, status: str, **fields: Any) -> None:
        """Update cell ``i`` and write (throttled)."""
        self.data["cells"][i].update(status=status, **fields)
        self._dirty = True
        self.write()

    def finish(self, i: int, result: Result) -> None:
        """Record the outcome of cell ``i`` from its ``(record, skipped)``."""
        rec, skipped = result
        m = rec.get("primary_metric")
        value = (rec.get("metrics") or {}).get("test", {}).get(m) if m else None
        status = "cached" if skipped else ("error" if rec.get("stub") else rec["status"])
        self.set(i, status, error=rec.get("error"), metric=None if value is None else {m: value},
                 finished_at=rec.get("finished_at"))

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


def split_cached(specs: list[RunSpec], output_dir: str | Path, force: bool, manifest: GridManifest,
                 results: list[Result | None], on_done: OnDone | None) -> list[int]:
    """Fill ``results`` with finished cells (loaded from their records) and return the rest to run."""
    todo = []
    for i, spec in enumerate(specs):
        rec = None if force else existing_ok(record_path(output_dir, spec), spec.run_id)
        if rec is None:
            todo.append(i)
            continue
        results[i] = (rec, True)
        manifest.finish(i, results[i])
        if on_done:
            on_done(i, results[i])
    manifest.flush()
    return todo


# ------------------------------------------------------------------------------------------ sequential
def run_sequential(specs: list[RunSpec], output_dir: str | Path, *, force: bool, root: str | None,
                   protocol: str | None, on_start: Callable[[int, RunSpec], None] | None = None,
                   on_epoch_factory: Callable[[int, RunSpec], Callable | None] | None = None,
                   on_done: OnDone | None = None) -> list[Result]:
    """Run the cells one after the other in this process (bad input stops the grid)."""
    from .runner import execute

    manifest = GridManifest(specs, output_dir, protocol, "sequential")
    manifest.flush()
    results: list[Result] = []
    try:
        for i, spec in enumerate(specs):
            if on_start:
                on_start(i, spec)
            manifest.set(i, "running")
            try:
                res = execute(spec, output_dir, force=force, root=root, protocol=protocol,
                              on_epoch=on_epoch_factory(i, spec) if on_epoch_factory else None)
            except MMBenchError as exc:
                manifest.set(i, "error", error=describe_error(exc))
                raise
            manifest.finish(i, res)
            if on_done:
                on_done(i, res)
            results.append(res)
    finally:
        manifest.flush()
    return results


# ------------------------------------------------------------------------------------------ local pool
def _init_worker(threads: int, gpu_queue: Any) -> None:
    """Pool initializer: split CPU threads evenly; pin one GPU per worker when ``--gpus`` is given."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())
    import torch

    torch.set_num_threads(threads)


def _run_one(spec_dict: dict[str, Any], output_dir: str, force: bool, root: str | None,
             protocol: str | None) -> Result:
    """Worker entry point (picklable): execute one spec in this process."""
    from .runner import execute

    return execute(RunSpec.from_dict(spec_dict), output_dir, force=force, root=root, protocol=protocol)


def run_local(specs: list[RunSpec], output_dir: str | Path, *, force: bool, root: str | None,
              protocol: str | None, jobs: int, on_done: OnDone | None = None,
              gpus: list[str] | None = None) -> list[Result]:
    """Run cells in ``jobs`` spawned worker processes; results come back in ``specs`` order.

    CPU threads are split evenly between workers; with ``gpus`` (e.g. ``["0", "1"]``) worker k sees
    only ``CUDA_VISIBLE_DEVICES=gpus[k % len(gpus)]``. A cell whose worker raises (bad input) or dies
    gets an in-memory ``failed`` record and the other cells go on.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if gpus is not None and not gpus:
        raise ConfigError("--gpus: expected a list of device ids like 0,1")
    results: list[Result | None] = [None] * len(specs)
    manifest = GridManifest(specs, output_dir, protocol, "local")
    todo = split_cached(specs, output_dir, force, manifest, results, on_done)
    if todo:
        workers = min(jobs, len(todo))
        threads = max(1, available_cpus() // workers)
        ctx = mp.get_context("spawn")
        gpu_queue = None
        if gpus:
            gpu_queue = ctx.Queue()
            for k in range(workers):
                gpu_queue.put(gpus[k % len(gpus)])
        manifest.data["extra"] = {"workers": workers, "threads_per_worker": threads, "gpus": gpus}
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                      initargs=(threads, gpu_queue))
        try:
            futs = {pool.submit(_run_one, specs[i].to_dict(), str(output_dir), force, root, protocol): i
                    for i in todo}
            for fut in cf.as_completed(futs):
                i = futs[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # bad input in the worker, or a dead worker
                    tb = "".join(traceback.format_exception(exc))
                    res = (stub_record(specs[i], protocol, describe_error(exc), tb), False)
                results[i] = res
                manifest.finish(i, res)
                if on_done:
                    on_done(i, res)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            manifest.flush()
        pool.shutdown()
    return [r for r in results if r is not None]

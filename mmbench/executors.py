"""Grid execution: sequential (default, CI), local process pool, and Slurm via submitit job arrays.

Resume lives in the result store (records are keyed by the spec hash), so any executor can be
killed and restarted: finished cells are loaded, not re-run.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import RunSpec
from .errors import ConfigError

EXECUTORS = ("sequential", "local", "slurm")

Result = tuple[dict[str, Any], bool]


def _run_one(spec_dict: dict[str, Any], output_dir: str, force: bool, root: str | None, protocol: str | None,
             threads: int | None = None) -> Result:
    """Worker entry point (picklable): execute one spec in this process."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .runner import execute

    return execute(RunSpec.from_dict(spec_dict), output_dir, force=force, root=root, protocol=protocol)


def run_sequential(specs: list[RunSpec], output_dir: str | Path, *, force: bool, root: str | None,
                   protocol: str | None, on_start: Callable[[int, RunSpec], None] | None = None,
                   on_epoch_factory: Callable[[int, RunSpec], Callable | None] | None = None,
                   on_done: Callable[[int, Result], None] | None = None) -> list[Result]:
    """Run the cells one after the other in this process."""
    from .runner import execute

    results = []
    for i, spec in enumerate(specs):
        if on_start:
            on_start(i, spec)
        res = execute(spec, output_dir, force=force, root=root, protocol=protocol,
                      on_epoch=on_epoch_factory(i, spec) if on_epoch_factory else None)
        if on_done:
            on_done(i, res)
        results.append(res)
    return results


def run_local(specs: list[RunSpec], output_dir: str | Path, *, force: bool, root: str | None, protocol: str | None,
              jobs: int, on_done: Callable[[int, Result], None] | None = None) -> list[Result]:
    """Run cells in ``jobs`` spawned worker processes (CPU threads split evenly between them)."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    results: list[Result | None] = [None] * len(specs)
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(_run_one, s.to_dict(), str(output_dir), force, root, protocol, threads): i
                for i, s in enumerate(specs)}
        for fut in cf.as_completed(futs):
            i = futs[fut]
            results[i] = fut.result()
            if on_done:
                on_done(i, results[i])
    return [r for r in results if r is not None]

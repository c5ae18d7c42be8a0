"""Run records: one JSON document per run, written atomically; read and queried by tables/checks.

Layout: ``<output_dir>/<dataset>/<method>/<cell>-s<seed>-<hash8>.json`` (+ ``.npz`` test
predictions). The file name is a pure function of the spec, so resuming is a lookup. A record is
written with a temporary file in the same folder and ``os.replace`` (readers never see half a file),
and it is written *after* its predictions file, so a record's presence means the run is complete.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from .config import SCHEMA_VERSION, RunSpec
from .errors import MMBenchError

REQUIRED_KEYS = ("schema_version", "run_id", "status", "spec", "primary_metric", "metrics")


def record_path(output_dir: str | Path, spec: RunSpec) -> Path:
    """Where the record of ``spec`` lives."""
    return Path(output_dir) / spec.dataset["name"] / spec.method["name"] / f"{spec.short_name()}.json"


def run_lock(path: Path) -> FileLock:
    """An inter-process lock for the record at ``path`` (hidden file ``.<stem>.lock`` beside it).

    Held around skip-check + run + write, so two workers (local pool, Slurm array, two ``mmbench
    run`` invocations) never run the same cell at once: the second waits, then finds the record.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.with_name(f".{path.stem}.lock"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Atomically write one run record as JSON (NaN is not allowed; undefined metrics are null)."""
    text = json.dumps(record, indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def write_predictions(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write a compressed ``.npz`` of prediction arrays."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_record(path: str | Path) -> dict[str, Any]:
    """Load and minimally validate one record (newer schema versions are refused clearly)."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MMBenchError(f"{path}: not a readable run record ({exc})") from None
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise MMBenchError(f"{path}: not a run record (missing keys {missing})")
    if int(rec["schema_version"]) > SCHEMA_VERSION:
        raise MMBenchError(f"{path}: record schema version {rec['schema_version']} is newer than this mmbench "
                           f"({SCHEMA_VERSION}); upgrade mmbench")
    return rec


def iter_records(results_dir: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """All run records below ``results_dir`` (files that are not records are skipped)."""
    root = Path(results_dir)
    for p in sorted(root.rglob("*.json")):
        if p.name.startswith("."):
            continue
        try:
            yield p, read_record(p)
        except MMBenchError:
            continue


def load_records(results_dir: str | Path, status: str | None = "ok") -> list[dict[str, Any]]:
    """Records below ``results_dir``; a missing or empty folder is a clear error."""
    root = Path(results_dir)
    if not root.is_dir():
        raise MMBenchError(f"results folder {root} does not exist (expected the --output-dir of `mmbench run`)")
    recs = [r for _, r in iter_records(root) if status is None or r["status"] == status]
    if not recs:
        what = "run records" if status is None else f"run records with status {status!r}"
        raise MMBenchError(f"no {what} found under {root} (run `mmbench run ... --output-dir {root}` first)")
    return recs


def existing_ok(path: Path, run_id: str) -> dict[str, Any] | None:
    """The record at ``path`` if it is complete, ``ok`` and of the same run id; else None."""
    if not path.is_file():
        return None
    try:
        rec = read_record(path)
    except MMBenchError:
        return None
    return rec if rec.get("status") == "ok" and rec.get("run_id") == run_id else None

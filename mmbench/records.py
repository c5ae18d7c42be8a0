"""Run records: the typed :class:`RunRecord`, written atomically, read (and migrated) in one place.

Layout: ``<output_dir>/<dataset>/<method>/<cell>-s<seed>-<hash8>.json`` (+ ``.npz`` test
predictions). The file name is a pure function of the spec, so resuming is a lookup. A record is
written with a temporary file in the same folder and ``os.replace`` (readers never see half a file),
with the process umask's permissions, and *after* its predictions file, so a record's presence means
the run is complete.

Schema history (``schema_version``): 1 = the first release (head and balancer inside ``spec.method``,
no code versions); 2 = components as ``spec.head`` / ``spec.balancer`` with their ``version``, and the
``training_id``, ``diagnostics``, ``regret``, ``data_fingerprint`` and ``feature_cache`` fields.
Version-1 records are migrated on read, so they keep loading and tabulating as before; a record of a
newer schema than this mmbench is refused with a message to upgrade.

This module imports neither torch nor numpy-heavy code: reading commands stay fast.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import MMBenchError
from .spec import SCHEMA_VERSION, RunSpec, pooling_key

Number = float | int | None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null", protected_namespaces=())


class Labels(_Model):
    """Human labels of a run used by summaries and tables."""

    method: str
    dataset: str
    protocol: str | None = None
    scenario: str
    rate: float | None = None
    rates: dict[str, float] | None = None
    test_rates: dict[str, float] | None = None
    test_rate: float | None = None
    availability: str
    test_availability: str
    missing: str | None = None  # the cell in words: "both missing 50% (image 75% / tabular 75% available)"
    seed: int
    sim_seed: int


class Metrics(_Model):
    """Validation and test metrics, overall and per missing pattern, and the Bayes regret."""

    val: dict[str, Number] = Field(default_factory=dict)
    test: dict[str, Number] = Field(default_factory=dict)
    test_by_pattern: dict[str, dict[str, Number]] = Field(default_factory=dict)
    #: Bayes-rule accuracy on the same test rows minus the method's: ``{"overall": x, "<pattern>": x}``
    regret: dict[str, Number] | None = None


class Timing(_Model):
    """Where the time went (seconds unless named otherwise)."""

    train_seconds: float | None = None
    eval_seconds: float | None = None
    samples_per_second: float | None = None
    step_ms: float | None = None
    steps: int | None = None
    peak_memory_mb: float | None = None
    wall_seconds: float | None = None
    parameters: int | None = None


class MaskSummary(_Model):
    """The presence mask of one split: its hash (paired comparisons need equal hashes) and counts."""

    hash: str
    n: int
    n_dropped_no_modality: int = 0
    patterns: dict[str, int] = Field(default_factory=dict)
    natural_absent: dict[str, int] = Field(default_factory=dict)


class RunRecord(_Model):
    """One run: what was run (``spec``), how it went (``status``, ``curves``), what it scored."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    training_id: str | None = None
    status: Literal["ok", "failed", "running"]
    error: str | None = None
    traceback: str | None = None
    labels: Labels
    spec: dict[str, Any]
    primary_metric: str
    metrics: Metrics = Field(default_factory=Metrics)
    ceiling: dict[str, Number] | None = None
    masks: dict[str, MaskSummary] = Field(default_factory=dict)
    curves: list[dict[str, Any]] = Field(default_factory=list)
    best_epoch: int | None = None
    diagnostics: dict[str, Any] | None = None
    #: cross-validated linear-probe R² of each true latent factor from each feature group (mmbench.probes)
    probes: dict[str, dict[str, Number]] | None = None
    data_fingerprint: dict[str, Any] | None = None
    feature_cache: Literal["built", "reused"] | None = None
    timing: Timing = Field(default_factory=Timing)
    env: dict[str, Any] = Field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    files: dict[str, str] = Field(default_factory=dict)

    # ------------------------------------------------------------------------------- accessors
    @property
    def ok(self) -> bool:
        """The run finished and scored."""
        return self.status == "ok"

    @property
    def pooling_key(self) -> str:
        """Hash of the spec without its seeds: records with equal keys are seeds of one experiment."""
        return pooling_key(self.spec)

    def test_value(self, metric: str | None = None) -> Number:
        """The test value of ``metric`` (default: the primary metric)."""
        return self.metrics.test.get(metric or self.primary_metric)

    def to_json(self) -> str:
        """The record as indented JSON (non-finite floats as null)."""
        return self.model_dump_json(indent=2) + "\n"


def labels_for(spec: RunSpec, protocol: str | None) -> Labels:
    """The labels of a run of ``spec``."""
    m = spec.missing
    return Labels(method=spec.label, dataset=spec.dataset.name, protocol=protocol, scenario=m.scenario,
                  rate=m.rate, rates=m.rates, test_rates=m.test_rates,
                  test_rate=m.test_rate if m.test_rate is not None else m.rate,
                  availability=m.label("train"), test_availability=m.label("test"), missing=m.describe("test"),
                  seed=spec.train_seed, sim_seed=spec.sim_seed)


def new_record(spec: RunSpec, protocol: str | None, **fields: Any) -> RunRecord:
    """A record of ``spec`` (status, metrics and the rest given by ``fields``)."""
    return RunRecord(run_id=spec.run_id, labels=labels_for(spec, protocol), spec=spec.to_dict(),
                     primary_metric=spec.dataset.primary_metric, **fields)


# ------------------------------------------------------------------------------------------- paths
def record_path(output_dir: str | Path, spec: RunSpec) -> Path:
    """Where the record of ``spec`` lives."""
    return Path(output_dir) / spec.dataset.name / spec.label / f"{spec.short_name()}.json"


def lock_path(path: Path) -> Path:
    """The hidden lock file beside a record."""
    return path.with_name(f".{path.stem}.lock")


def run_lock(path: Path) -> Any:
    """An inter-process lock for the record at ``path`` (hidden file ``.<stem>.lock`` beside it).

    Held around skip-check + run + write, so two workers (local pool, Slurm array, two ``mmbench
    run`` invocations) never run the same cell at once: the second waits, then finds the record.
    """
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(lock_path(path))


def is_scaffolding(path: Path, output_dir: Path) -> bool:
    """Whether ``path`` (below ``output_dir``) is bookkeeping rather than a result: lock files, temporary
    files of an interrupted write, and grid manifests."""
    rel = path.relative_to(output_dir)
    name = path.name
    return name.endswith(".lock") or (name.startswith(".") and name.endswith(".tmp")) or rel.parts[0] == "grids"


# ------------------------------------------------------------------------------------------- write
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``),
    with the permissions of a normally created file under the process umask (``0o666 & ~umask``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(path: Path, record: RunRecord) -> None:
    """Atomically write one run record as JSON (undefined and non-finite metrics are null)."""
    atomic_write_bytes(path, record.to_json().encode())


def write_predictions(path: Path, arrays: dict[str, Any]) -> None:
    """Atomically write a compressed ``.npz`` of prediction arrays."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


# -------------------------------------------------------------------------------------------- read
def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a record of an older schema to the current one (version 1 -> 2)."""
    version = int(data.get("schema_version", 0))
    if version == 1:
        data = dict(data)
        spec = dict(data["spec"])
        method = dict(spec["method"])
        spec["head"] = {"name": method.pop("head", "native"), "version": 0, "params": method.pop("head_params", {})}
        spec["balancer"] = {"name": method.pop("balancer", "none"), "version": 0,
                            "params": method.pop("balancer_params", {})}
        method["version"] = 0  # made before behaviour versions existed
        spec["method"] = method
        dataset = dict(spec["dataset"])
        spec["encoders"] = dataset.pop("encoders", {})
        dataset["version"] = 0
        spec["dataset"] = dataset
        data["spec"] = spec
        data.setdefault("labels", {}).setdefault("missing", None)
        data["schema_version"] = 2
    return data


def parse_record(data: Any, where: str | Path) -> RunRecord:
    """A :class:`RunRecord` from decoded JSON (migrated from older schemas); bad input is one line."""
    if not isinstance(data, dict) or "schema_version" not in data or "run_id" not in data:
        raise MMBenchError(f"{where}: not a run record (no schema_version / run_id)")
    try:
        version = int(data["schema_version"])
    except (TypeError, ValueError):
        raise MMBenchError(f"{where}: not a run record (schema_version {data['schema_version']!r})") from None
    if version > SCHEMA_VERSION:
        raise NewerSchema(f"{where}: record schema version {version} is newer than this mmbench "
                          f"({SCHEMA_VERSION}); upgrade mmbench to read it")
    try:
        return RunRecord.model_validate(migrate(data))
    except (ValidationError, KeyError, TypeError) as exc:
        first = exc.errors(include_url=False)[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        loc = ".".join(str(p) for p in first["loc"])
        raise MMBenchError(f"{where}: not a valid run record ({loc}: {first['msg']})") from None


class NewerSchema(MMBenchError):
    """A record written by a newer mmbench."""


def read_record(path: str | Path) -> RunRecord:
    """Load one record (migrating older schemas; newer schema versions are refused clearly)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise MMBenchError(f"{path}: not a readable run record ({exc})") from None
    except json.JSONDecodeError as exc:
        raise MMBenchError(f"{path}: not a readable run record (truncated or not JSON: {exc.msg}, line "
                           f"{exc.lineno} column {exc.colno})") from None
    return parse_record(data, path)


@dataclass
class Skipped:
    """A file under a results folder that looked like a record but could not be read."""

    path: Path
    reason: str
    newer: bool = False


def _record_files(root: Path) -> Iterator[Path]:
    for p in sorted(root.rglob("*.json")):
        rel = p.relative_to(root)
        if p.name.startswith(".") or rel.parts[0] == "grids":
            continue
        yield p


def scan_records(results_dir: str | Path) -> tuple[list[tuple[Path, RunRecord]], list[Skipped]]:
    """Every record below ``results_dir`` and every JSON file that is not a readable record."""
    root = Path(results_dir)
    found, skipped = [], []
    for p in _record_files(root):
        try:
            found.append((p, read_record(p)))
        except NewerSchema as exc:
            skipped.append(Skipped(p, str(exc), newer=True))
        except MMBenchError as exc:
            skipped.append(Skipped(p, str(exc)))
    return found, skipped


def iter_records(results_dir: str | Path) -> Iterator[tuple[Path, RunRecord]]:
    """All readable run records below ``results_dir``."""
    yield from scan_records(results_dir)[0]


@dataclass
class RecordSet:
    """What a reading command loaded: the records it uses, and what it left out and why."""

    records: list[RunRecord]
    paths: list[Path]
    skipped: list[Skipped]
    failed: list[RunRecord]

    def warnings(self) -> list[str]:
        """One line per kind of left-out file (unreadable, newer schema, failed runs)."""
        out = []
        newer = [s for s in self.skipped if s.newer]
        bad = [s for s in self.skipped if not s.newer]
        if newer:
            out.append(f"{len(newer)} record(s) of a newer schema left out (upgrade mmbench to read them), "
                       f"e.g. {newer[0].path}")
        if bad:
            out.append(f"{len(bad)} unreadable file(s) left out, e.g. {bad[0].reason}")
        if self.failed:
            out.append(f"{len(self.failed)} failed run(s) left out (status failed), e.g. "
                       f"{self.failed[0].labels.method} seed {self.failed[0].labels.seed}: "
                       f"{(self.failed[0].error or '').splitlines()[0] if self.failed[0].error else 'no error text'}")
        return out


def load_records(results_dir: str | Path, status: str | None = "ok") -> RecordSet:
    """Records below ``results_dir`` with ``status`` (all with ``None``); a missing folder, or one with
    no usable record, is a one-line error that says why (including files left out)."""
    root = Path(results_dir)
    if not root.is_dir():
        if root.exists():
            raise MMBenchError(f"--results {root}: not a folder (expected the --output-dir of `mmbench run`)")
        raise MMBenchError(f"results folder {root} does not exist (expected the --output-dir of `mmbench run`)")
    found, skipped = scan_records(root)
    keep = [(p, r) for p, r in found if status is None or r.status == status]
    failed = [r for _, r in found if r.status == "failed" and status == "ok"]
    if not keep:
        why = []
        if skipped:
            newer = sum(s.newer for s in skipped)
            why.append(f"{len(skipped)} file(s) could not be read" + (f", {newer} of a newer schema (upgrade "
                                                                       "mmbench)" if newer else ""))
            why.append(f"first: {skipped[0].reason}")
        if failed:
            why.append(f"{len(failed)} run(s) failed")
        what = "run records" if status is None else f"run records with status {status!r}"
        detail = f" ({'; '.join(why)})" if why else f" (run `mmbench run ... --output-dir {root}` first)"
        raise MMBenchError(f"no {what} found under {root}{detail}")
    return RecordSet([r for _, r in keep], [p for p, _ in keep], skipped, failed)


def existing_ok(path: Path, run_id: str) -> RunRecord | None:
    """The record at ``path`` if it is complete, ``ok`` and of the same run id; else None.

    A record of a newer schema is never overwritten silently: it raises :class:`NewerSchema`.
    """
    if not path.is_file():
        return None
    try:
        rec = read_record(path)
    except NewerSchema:
        raise
    except MMBenchError:
        return None
    return rec if rec.status == "ok" and rec.run_id == run_id else None


def superseded(path: Path, spec_tree: dict[str, Any]) -> list[tuple[Path, RunRecord]]:
    """Records beside ``path`` for the same cell and seed made by other code versions (same spec up to
    the ``version`` fields and the mmbench version): a resume re-runs them and says so."""
    if not path.parent.is_dir():
        return []
    stem_prefix = path.stem.rsplit("-", 1)[0] + "-"
    want = _without_versions(spec_tree)
    out = []
    for p in sorted(path.parent.glob(f"{stem_prefix}*.json")):
        if p == path:
            continue
        try:
            rec = read_record(p)
        except MMBenchError:
            continue
        if rec.ok and _without_versions(rec.spec) == want:
            out.append((p, rec))
    return out


def _without_versions(tree: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in tree.items() if k not in ("mmbench_version", "schema_version")}
    for part in ("method", "head", "balancer", "dataset"):
        if isinstance(out.get(part), dict):
            out[part] = {k: v for k, v in out[part].items() if k != "version"}
    return out


def version_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What changed between two spec trees' code versions, e.g. ``dfpl v1 -> v2``."""
    parts = []
    for part in ("method", "head", "balancer", "dataset"):
        a, b = (old.get(part) or {}).get("version"), (new.get(part) or {}).get("version")
        if a != b:
            name = (new.get(part) or {}).get("name", part)
            parts.append(f"{name} v{a} -> v{b}")
    if old.get("mmbench_version") != new.get("mmbench_version"):
        parts.append(f"mmbench {old.get('mmbench_version')} -> {new.get('mmbench_version')}")
    return ", ".join(parts) or "code version"

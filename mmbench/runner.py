"""Execute one RunSpec end to end and write its record (DESIGN.md "Data flow of one run")."""

from __future__ import annotations

import datetime as dt
import os
import resource
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunSpec
from .data.base import SPLITS, DataInfo, DatasetAdapter, Split
from .encoders.config import EncodersConfig
from .env import environment
from .errors import MMBenchError, RunFailed
from .metrics import compute_metrics, metrics_by_pattern
from .models.base import BuildContext
from .pipeline import Pipeline
from .protocols import combine, mask_hash, pattern_counts, simulate_presence
from .records import existing_ok, record_path, run_lock, write_predictions, write_record
from .registry import BALANCERS, DATASETS, ENCODERS, HEADS, METHODS
from .train import Loader, fit, predict, resolve_device, seed_everything
from .typed import from_dict

_DATA_CACHE: dict[str, tuple[DataInfo, dict[str, Split], dict[str, float] | None]] = {}


def data_root(explicit: str | None) -> str | None:
    """``--data-root`` or the ``MMBENCH_DATA`` environment variable."""
    return explicit or os.environ.get("MMBENCH_DATA")


def build_adapter(spec: RunSpec, root: str | None) -> DatasetAdapter:
    """The dataset adapter of ``spec`` with its typed options."""
    cls = DATASETS.get(spec.dataset["adapter"])
    return cls(from_dict(cls.Options, spec.dataset["options"], f"datasets/{spec.dataset['name']}.yaml: options"),
               data_root=root)


def load_data(spec: RunSpec, root: str | None) -> tuple[DataInfo, dict[str, Split], dict[str, float] | None]:
    """Load (once per process) the splits of the spec's dataset; card task/metric override the adapter's."""
    import json

    key = json.dumps([spec.dataset["adapter"], spec.dataset["options"], root], sort_keys=True)
    if key not in _DATA_CACHE:
        adapter = build_adapter(spec, root)
        info, splits = adapter.load()
        _DATA_CACHE[key] = (info, splits, adapter.ceiling())
    info, splits, ceiling = _DATA_CACHE[key]
    from dataclasses import replace

    info = replace(info, name=spec.dataset["name"], primary_metric=spec.dataset["primary_metric"])
    return info, splits, ceiling


def encoders_from_spec(spec: RunSpec) -> EncodersConfig:
    """Typed encoder configs from the resolved spec."""
    parts = {}
    for mod in ("image", "tabular"):
        raw = spec.dataset["encoders"][mod]
        parts[mod] = from_dict(ENCODERS.get(raw["kind"]).Config, raw, f"encoders.{mod}")
    return EncodersConfig(**parts)


def build_pipeline(spec: RunSpec, info: DataInfo) -> Pipeline:
    """Method + head + balancer for ``spec``."""
    m = spec.method
    ctx = BuildContext(info=info, encoders=encoders_from_spec(spec), hidden=int(spec.dataset["hidden"]))
    mcls = METHODS.get(m["impl"])
    method = mcls(ctx, from_dict(mcls.Config, m["params"], f"methods/{m['name']}.yaml: params"))
    hcls, bcls = HEADS.get(m["head"]), BALANCERS.get(m["balancer"])
    dims = method.embed_dims()
    head = hcls(ctx, dims, from_dict(hcls.Config, m["head_params"], "head_params"))
    balancer = bcls(ctx, dims, from_dict(bcls.Config, m["balancer_params"], "balancer_params"))
    return Pipeline(method, head, balancer)


def presence_masks(spec: RunSpec, splits: dict[str, Split]) -> tuple[dict[str, torch.Tensor],
                                                                     dict[str, torch.Tensor], dict[str, Any]]:
    """Presence mask and kept row indices per split, plus the mask summary stored in the record."""
    missing = spec.missing_spec
    presents, indices, summary = {}, {}, {}
    for name in SPLITS:
        sp = splits[name]
        sim = simulate_presence(len(sp), missing, name, spec.sim_seed, sp.natural_present)
        present, keep = combine(sim, sp.natural_present)
        presents[name], indices[name] = present, keep.nonzero().flatten()
        kept = present[keep]
        summary[name] = {
            "hash": mask_hash(torch.cat([keep.unsqueeze(1), present], dim=1)),
            "n": int(len(sp)), "n_dropped_no_modality": int((~keep).sum()),
            "patterns": pattern_counts(kept),
            "natural_absent": {m: int((~sp.natural_present[:, j]).sum()) for j, m in enumerate(("image", "tabular"))},
        }
    return presents, indices, summary


def method_label(spec: RunSpec) -> str:
    """Table label of a run's method: the config name, plus ``+head`` / ``+balancer`` when they were
    set on top of it (``--head dpl`` on ``shaspec`` -> ``shaspec+dpl``), so variants never merge."""
    m = spec.method
    label = m["name"]
    for part, default in ((m["head"], "native"), (m["balancer"], "none")):
        if part != default and f"+{part}" not in label:
            label += f"+{part}"
    return label


def run_labels(spec: RunSpec, protocol: str | None) -> dict[str, Any]:
    """Human labels of a run (method, dataset, cell, seeds) used by summaries and tables."""
    m = spec.missing_spec
    return {"method": method_label(spec), "dataset": spec.dataset["name"], "protocol": protocol,
            "scenario": m.scenario, "rate": m.rate, "rates": m.rates, "test_rates": m.test_rates,
            "test_rate": m.test_rate if m.test_rate is not None else m.rate,
            "availability": m.label("train"), "test_availability": m.label("test"),
            "seed": spec.train_seed, "sim_seed": spec.sim_seed}


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def execute(spec: RunSpec, output_dir: str | Path, *, force: bool = False, root: str | None = None,
            protocol: str | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None
            ) -> tuple[dict[str, Any], bool]:
    """Run ``spec`` (or load its finished record) and return ``(record, skipped)``.

    Bad user input (``MMBenchError``) propagates and writes nothing. A run that fails (non-finite
    loss, a stage without rows, or a bug) still writes a record with status ``failed`` and the error.
    A per-record file lock makes concurrent workers on the same cell run it once.
    """
    path = record_path(output_dir, spec)
    with run_lock(path):
        return _execute_locked(spec, path, force=force, root=root, protocol=protocol, on_epoch=on_epoch)


def _execute_locked(spec: RunSpec, path: Path, *, force: bool, root: str | None, protocol: str | None,
                    on_epoch: Callable[[dict[str, Any]], None] | None) -> tuple[dict[str, Any], bool]:
    """Body of :func:`execute`, called with the record's lock held."""
    if not force:
        rec = existing_ok(path, spec.run_id)
        if rec is not None:
            return rec, True
    started, t_start = _now(), time.perf_counter()
    train_cfg = spec.train_config
    device = resolve_device(train_cfg.device)
    if train_cfg.num_threads > 0:
        torch.set_num_threads(train_cfg.num_threads)
    root = data_root(root)
    info, splits, ceiling = load_data(spec, root)
    presents, indices, mask_summary = presence_masks(spec, splits)
    record: dict[str, Any] = {
        "schema_version": spec.schema_version, "run_id": spec.run_id, "status": "running", "error": None,
        "labels": run_labels(spec, protocol),
        "spec": spec.to_dict(), "primary_metric": spec.dataset["primary_metric"],
        "metrics": {}, "ceiling": ceiling, "masks": mask_summary, "curves": [], "best_epoch": None,
        "timing": {}, "env": {}, "started_at": started, "finished_at": None, "files": {},
    }
    try:
        seed_everything(spec.train_seed)
        pipeline = build_pipeline(spec, info).to(device)
        if device.type == "cuda":
            pipeline = pipeline.to(memory_format=torch.channels_last)
            torch.cuda.reset_peak_memory_stats(device)
        loaders = {
            name: Loader(splits[name], presents[name],
                         train_cfg.batch_size if name == "train" else train_cfg.eval_batch_size,
                         shuffle=name == "train", seed=spec.train_seed, device=device, indices=indices[name])
            for name in SPLITS
        }
        result = fit(pipeline, loaders, train_cfg, primary_metric=record["primary_metric"], task=info.task,
                     on_epoch=on_epoch)
        record["curves"], record["best_epoch"] = result.curves, result.best_epoch
        record["diagnostics"] = result.diagnostics
        t_eval = time.perf_counter()
        save_aux = tuple(getattr(pipeline.method, "save_aux", ()))
        val = predict(pipeline, loaders["val"], amp=train_cfg.amp)
        test = predict(pipeline, loaders["test"], amp=train_cfg.amp, save_aux=save_aux)
        record["metrics"] = {
            "val": compute_metrics(val.logits, val.y, info.task),
            "test": compute_metrics(test.logits, test.y, info.task),
            "test_by_pattern": metrics_by_pattern(test.logits, test.y, test.present, info.task),
        }
        pred_path = path.with_suffix(".npz")
        write_predictions(pred_path, {"logits": test.logits, "y": test.y, "present": test.present,
                                      "index": test.index, **{f"aux_{k}": v for k, v in test.aux.items()}})
        record["files"]["predictions"] = pred_path.name
        record["timing"] = {
            "train_seconds": round(result.train_seconds, 3),
            "eval_seconds": round(time.perf_counter() - t_eval, 3),
            "samples_per_second": round(result.samples_seen / max(result.train_seconds, 1e-9), 2),
            "step_ms": round(1000 * result.train_seconds / max(result.steps, 1), 3),
            "steps": result.steps,
            "peak_memory_mb": round(_peak_memory_mb(device), 1),
        }
        record["status"] = "ok"
    except MMBenchError:
        raise
    except RunFailed as exc:
        record["status"], record["error"] = "failed", str(exc)
    except Exception as exc:  # a bug: record it, let the grid go on
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    record["env"] = environment(device)
    record["timing"]["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    record["finished_at"] = _now()
    _sanitize(record)
    write_record(path, record)
    return record, False


def _sanitize(obj: Any) -> Any:
    """Replace non-finite floats by None in place (JSON has no NaN)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, float) and not np.isfinite(v):
                obj[k] = None
            else:
                _sanitize(v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if isinstance(v, float) and not np.isfinite(v):
                obj[i] = None
            else:
                _sanitize(v)
    return obj

"""Execute one RunSpec end to end and write its record.

Data flow: the dataset adapter's splits -> presence masks from the missingness cell and ``sim_seed``
-> the pipeline (method + head + balancer) trained with early stopping on validation -> test
predictions, metrics overall and per missing pattern, regret against the per-row Bayes rule where
the dataset knows it -> one :class:`~mmbench.records.RunRecord` written atomically.
"""

from __future__ import annotations

import datetime as dt
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core import MODALITIES, SPLITS, data_root
from .data.base import DataInfo, DatasetAdapter, Split
from .env import environment
from .errors import MMBenchError, RunFailed
from .metrics import bayes_regret, compute_metrics, metrics_by_pattern
from .models.base import BuildContext
from .pipeline import Pipeline
from .protocols import combine, mask_hash, pattern_counts, simulate_presence
from .records import (
    MaskSummary,
    Metrics,
    RunRecord,
    Timing,
    existing_ok,
    new_record,
    record_path,
    run_lock,
    write_predictions,
    write_record,
)
from .registry import BALANCERS, DATASETS, HEADS, METHODS
from .spec import RunSpec
from .train import Loader, fit, predict, resolve_device, seed_everything

#: test rows whose pooled per-modality embeddings (float16) go into the predictions ``.npz`` as
#: ``emb_<modality>`` (the first rows of ``logits``; for t-SNE figures), capped to bound its size
EMBEDDING_ROWS = 2000

_DATA_CACHE: dict[str, tuple[DataInfo, dict[str, Split], dict[str, float] | None, dict[str, Any] | None]] = {}


def build_adapter(spec: RunSpec, root: str | None) -> DatasetAdapter:
    """The dataset adapter of ``spec`` with its typed options."""
    return DATASETS.get(spec.dataset.adapter)(spec.dataset.options, data_root=root)


def load_data(spec: RunSpec, root: str | None
              ) -> tuple[DataInfo, dict[str, Split], dict[str, float] | None, dict[str, Any] | None]:
    """Load (once per process) the splits of the spec's dataset, its ceiling and its data fingerprint;
    the card's task and primary metric override the adapter's."""
    from .spec import canonical_json
    from .typed import dump

    key = canonical_json([spec.dataset.adapter, spec.dataset.version, dump(spec.dataset.options), root])
    if key not in _DATA_CACHE:
        adapter = build_adapter(spec, root)
        info, splits = adapter.load()
        fingerprint = splits["train"].extra.get("data_fingerprint")  # the cache's (checked); None: generated
        _DATA_CACHE[key] = (info, splits, adapter.ceiling(), fingerprint)
    info, splits, ceiling, fingerprint = _DATA_CACHE[key]
    info = replace(info, name=spec.dataset.name, primary_metric=spec.dataset.primary_metric)
    return info, splits, ceiling, fingerprint


def build_pipeline(spec: RunSpec, info: DataInfo) -> Pipeline:
    """Method + head + balancer for ``spec``."""
    ctx = BuildContext(info=info, encoders=spec.encoders, hidden=spec.dataset.hidden)
    method = METHODS.get(spec.method.impl)(ctx, spec.method.params)
    dims = method.embed_dims()
    head = HEADS.get(spec.head.impl)(ctx, dims, spec.head.params)
    balancer = BALANCERS.get(spec.balancer.impl)(ctx, dims, spec.balancer.params)
    return Pipeline(method, head, balancer)


def presence_masks(spec: RunSpec, splits: dict[str, Split]
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, MaskSummary]]:
    """Presence mask and kept row indices per split, plus the mask summary stored in the record."""
    presents, indices, summary = {}, {}, {}
    for name in SPLITS:
        sp = splits[name]
        natural = sp.natural_present.cpu().numpy()
        sim = simulate_presence(len(sp), spec.missing, name, spec.sim_seed, natural)
        present, keep = combine(sim, natural)
        presents[name] = torch.from_numpy(present)
        indices[name] = torch.from_numpy(np.flatnonzero(keep))
        summary[name] = MaskSummary(
            hash=mask_hash(np.concatenate([keep[:, None], present], axis=1)),
            n=int(len(sp)), n_dropped_no_modality=int((~keep).sum()),
            patterns=pattern_counts(present[keep]),
            natural_absent={m: int((~natural[:, j]).sum()) for j, m in enumerate(MODALITIES)},
        )
    return presents, indices, summary


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def execute(spec: RunSpec, output_dir: str | Path, *, force: bool = False, root: str | None = None,
            protocol: str | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None
            ) -> tuple[RunRecord, bool]:
    """Run ``spec`` (or load its finished record) and return ``(record, skipped)``.

    Bad user input (``MMBenchError``, e.g. a dataset that is not there) propagates and writes nothing.
    A run that fails (non-finite loss, a stage without rows, or a bug) still writes a record with
    status ``failed`` and the error. A per-record file lock makes concurrent workers run a cell once.
    """
    path = record_path(output_dir, spec)
    with run_lock(path):
        return _execute_locked(spec, path, force=force, root=root, protocol=protocol, on_epoch=on_epoch)


def _execute_locked(spec: RunSpec, path: Path, *, force: bool, root: str | None, protocol: str | None,
                    on_epoch: Callable[[dict[str, Any]], None] | None) -> tuple[RunRecord, bool]:
    """Body of :func:`execute`, called with the record's lock held."""
    if not force:
        rec = existing_ok(path, spec.run_id)
        if rec is not None:
            return rec, True
    elif path.is_file():
        existing_ok(path, spec.run_id)  # refuses to overwrite a record of a newer schema
    started, t_start = _now(), time.perf_counter()
    train_cfg = spec.train
    device = resolve_device(train_cfg.device)
    if train_cfg.num_threads > 0:
        torch.set_num_threads(train_cfg.num_threads)
    info, splits, ceiling, fingerprint = load_data(spec, data_root(root))
    presents, indices, mask_summary = presence_masks(spec, splits)
    fields: dict[str, Any] = {"ceiling": ceiling, "masks": mask_summary, "data_fingerprint": fingerprint,
                              "started_at": started}
    timing: dict[str, Any] = {}
    try:
        seed_everything(spec.train_seed)
        pipeline = build_pipeline(spec, info).to(device)
        timing["parameters"] = sum(p.numel() for p in pipeline.parameters())
        if device.type == "cuda":
            pipeline = pipeline.to(memory_format=torch.channels_last)
            torch.cuda.reset_peak_memory_stats(device)
        loaders = {
            name: Loader(splits[name], presents[name],
                         train_cfg.batch_size if name == "train" else train_cfg.eval_batch_size,
                         shuffle=name == "train", seed=spec.train_seed, device=device, indices=indices[name])
            for name in SPLITS
        }
        result = fit(pipeline, loaders, train_cfg, primary_metric=spec.dataset.primary_metric, task=info.task,
                     on_epoch=on_epoch)
        fields["curves"], fields["best_epoch"] = result.curves, result.best_epoch
        t_eval = time.perf_counter()
        save_aux = tuple(getattr(pipeline.method, "save_aux", ()))
        val = predict(pipeline, loaders["val"], amp=train_cfg.amp)
        test = predict(pipeline, loaders["test"], amp=train_cfg.amp, save_aux=save_aux,
                       embedding_rows=EMBEDDING_ROWS)
        posterior = splits["test"].extra.get("bayes_posterior")
        fields["metrics"] = Metrics(
            val=compute_metrics(val.logits, val.y, info.task),
            test=compute_metrics(test.logits, test.y, info.task),
            test_by_pattern=metrics_by_pattern(test.logits, test.y, test.present, info.task),
            regret=None if posterior is None else bayes_regret(test.logits, test.y, test.present, test.index,
                                                               posterior),
        )
        pred_path = path.with_suffix(".npz")
        write_predictions(pred_path, {"logits": test.logits, "y": test.y, "present": test.present,
                                      "index": test.index, **{f"aux_{k}": v for k, v in test.aux.items()},
                                      **{f"emb_{m}": v for m, v in test.embeddings.items()}})
        fields["files"] = {"predictions": pred_path.name}
        timing.update(
            train_seconds=round(result.train_seconds, 3),
            eval_seconds=round(time.perf_counter() - t_eval, 3),
            samples_per_second=round(result.samples_seen / max(result.train_seconds, 1e-9), 2),
            step_ms=round(1000 * result.train_seconds / max(result.steps, 1), 3),
            steps=result.steps,
            peak_memory_mb=round(_peak_memory_mb(device), 1),
        )
        fields["status"] = "ok"
    except MMBenchError:
        raise
    except RunFailed as exc:
        fields.update(status="failed", error=str(exc))
    except Exception as exc:  # a bug: record it, let the grid go on
        fields.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    timing["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    record = new_record(spec, protocol, env=environment(device), timing=Timing(**timing), finished_at=_now(),
                        **fields)
    write_record(path, record)
    return record, False

"""Execute a unit of RunSpecs (cells that share one training) end to end and write their records.

Data flow: the dataset adapter's splits -> presence masks from the missingness cell and ``sim_seed``
-> the pipeline (method + head + balancer) trained with early stopping on validation -> for each
cell of the unit, test predictions under that cell's test mask, metrics overall and per missing
pattern, regret against the per-row Bayes rule where the dataset knows it -> one
:class:`~mmbench.records.RunRecord` per cell, written atomically, naming its ``training_id``.

Train once, evaluate many: the cells of a unit differ only in test-time missingness
(:meth:`~mmbench.spec.RunSpec.training_spec`), and only the test split depends on it, so the
training (and the validation predictions) are the same for every cell: the unit trains once and
evaluates the selected weights once per cell; its records equal, bit for bit on CPU, those of
separate runs. A training shared by more than one cell also saves its selected weights
(:mod:`mmbench.checkpoint`), so a later invocation that finds some cells of the unit missing (an
interrupted sweep, a test rate added to it) evaluates them without training again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import resource
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import (
    Trained,
    checkpoint_path,
    load_checkpoint,
    restore_pipeline,
    save_checkpoint,
    training_lock,
)
from .core import MODALITIES, SPLITS, data_root
from .data.base import DataInfo, DatasetAdapter, Split
from .env import environment
from .errors import MMBenchError, RunFailed
from .metrics import bayes_regret, compute_metrics, metrics_by_pattern
from .models.base import BuildContext
from .pipeline import Pipeline
from .probes import collect, probe
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
from .train import EvalOutput, Loader, fit, predict, resolve_device, seed_everything

#: test rows whose pooled per-modality embeddings (float16) go into the predictions ``.npz`` as
#: ``emb_<modality>`` (the first rows of ``logits``; for t-SNE figures), capped to bound its size
EMBEDDING_ROWS = 2000

#: datasets loaded in this process, most recent last (a grid reuses them; at most _DATA_CACHE_SIZE are kept)
_DATA_CACHE: OrderedDict[str, tuple[DataInfo, dict[str, Split], dict[str, float] | None, dict[str, Any] | None]] = \
    OrderedDict()
_DATA_CACHE_SIZE = 2


def build_adapter(spec: RunSpec, root: str | None) -> DatasetAdapter:
    """The dataset adapter of ``spec`` with its typed options (``seed: run`` bound)."""
    return DATASETS.get(spec.dataset.adapter)(spec.data_options, data_root=root)


def load_data(spec: RunSpec, root: str | None
              ) -> tuple[DataInfo, dict[str, Split], dict[str, float] | None, dict[str, Any] | None]:
    """Load (once per process) the splits of the spec's dataset, its ceiling and its data fingerprint;
    the card's task and primary metric override the adapter's."""
    from .spec import canonical_json
    from .typed import dump

    key = canonical_json([spec.dataset.adapter, spec.dataset.version, dump(spec.data_options), root])
    if key not in _DATA_CACHE:
        adapter = build_adapter(spec, root)
        info, splits = adapter.load()
        fingerprint = splits["train"].extra.get("data_fingerprint")  # the cache's (checked); None: generated
        _DATA_CACHE[key] = (info, splits, adapter.ceiling(), fingerprint)
        while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
            _DATA_CACHE.popitem(last=False)
    _DATA_CACHE.move_to_end(key)
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


OnEpoch = Callable[[dict[str, Any]], None]


def execute(spec: RunSpec, output_dir: str | Path, *, force: bool = False, root: str | None = None,
            protocol: str | None = None, on_epoch: OnEpoch | None = None) -> tuple[RunRecord, bool]:
    """Run ``spec`` (or load its finished record) and return ``(record, skipped)``.

    Bad user input (``MMBenchError``, e.g. a dataset that is not there) propagates and writes nothing.
    A run that fails (non-finite loss, a stage without rows, or a bug) still writes a record with
    status ``failed`` and the error. File locks make concurrent workers run a cell once.
    """
    return execute_unit([spec], output_dir, force=force, root=root, protocol=protocol,
                        on_epoch=(lambda k: on_epoch) if on_epoch else None)[0]


def execute_unit(specs: list[RunSpec], output_dir: str | Path, *, force: bool = False, root: str | None = None,
                 protocol: str | None = None, on_start: Callable[[int], None] | None = None,
                 on_epoch: Callable[[int], OnEpoch | None] | None = None, tracker: Any = None,
                 checkpoint: bool | None = None) -> list[tuple[RunRecord, bool]]:
    """Run the cells ``specs`` of one unit (equal ``training_id``): train once, write one record per cell.

    Returns ``(record, skipped)`` per cell, in order. Cells with an ``ok`` record are loaded, not
    re-run (unless ``force``); when every cell is done nothing is trained. The unit's training lock,
    then every cell's record lock, are held throughout, so concurrent workers train a unit once.
    ``checkpoint``: save the selected weights for later invocations (default: when the training
    serves more than one cell); a saved checkpoint of the same training is always used when found.
    ``on_start(k)`` / ``on_epoch(k)`` are called with the index of the cell being worked on
    (training reports its epochs to the first cell that needs it). ``tracker`` (optional,
    :mod:`mmbench.tracking`) mirrors each run; it never fails one.
    """
    if len({s.training_id for s in specs}) != 1:
        raise ValueError("execute_unit: the cells of a unit must share one training_id")
    paths = [record_path(output_dir, s) for s in specs]
    with contextlib.ExitStack() as stack:
        stack.enter_context(training_lock(Path(output_dir), specs[0]))
        for path in sorted(set(paths)):
            stack.enter_context(run_lock(path))
        return _execute_unit_locked(specs, paths, Path(output_dir), force=force, root=root, protocol=protocol,
                                    on_start=on_start, on_epoch=on_epoch, tracker=tracker,
                                    checkpoint=len(specs) > 1 if checkpoint is None else checkpoint)


@dataclass
class _Shared:
    """What every cell of a unit shares: the data, the device, the trained pipeline, validation outputs."""

    info: DataInfo
    splits: dict[str, Split]
    ceiling: dict[str, float] | None
    fingerprint: dict[str, Any] | None
    device: torch.device
    trained: Trained | None = None
    val: EvalOutput | None = None
    feature_cache: str | None = None
    failure: dict[str, Any] | None = None


def _execute_unit_locked(specs: list[RunSpec], paths: list[Path], output_dir: Path, *, force: bool,
                         root: str | None, protocol: str | None, on_start: Callable[[int], None] | None,
                         on_epoch: Callable[[int], OnEpoch | None] | None, tracker: Any, checkpoint: bool
                         ) -> list[tuple[RunRecord, bool]]:
    """Body of :func:`execute_unit`, called with the locks held."""
    results: list[tuple[RunRecord, bool] | None] = [None] * len(specs)
    todo = []
    for k, (spec, path) in enumerate(zip(specs, paths, strict=True)):
        if not force:
            rec = existing_ok(path, spec.run_id)
            if rec is not None:
                results[k] = (rec, True)
                continue
        elif path.is_file():
            existing_ok(path, spec.run_id)  # refuses to overwrite a record of a newer schema
        todo.append(k)
    if not todo:
        return [r for r in results if r is not None]
    t_unit, started = time.perf_counter(), _now()
    first = specs[todo[0]]
    if on_start:
        on_start(todo[0])
    device = resolve_device(first.train.device)
    if first.train.num_threads > 0:
        torch.set_num_threads(first.train.num_threads)
    info, splits, ceiling, fingerprint = load_data(first, data_root(root))
    shared = _Shared(info, splits, ceiling, fingerprint, device)
    handles = {k: tracker.start(specs[k], protocol) for k in todo} if tracker is not None else {}

    def epoch_cb(row: dict[str, Any]) -> None:
        cb = on_epoch(todo[0]) if on_epoch else None
        if cb is not None:
            cb(row)
        for h in handles.values():
            h.epoch(row)

    ckpt = checkpoint_path(output_dir, first)
    try:
        _train_or_restore(first, shared, ckpt, save=checkpoint and not force, on_epoch=epoch_cb, force=force)
    except MMBenchError:
        for h in handles.values():
            h.abort()
        raise
    except RunFailed as exc:
        shared.failure = {"status": "failed", "error": str(exc)}
    except Exception as exc:  # a bug: record it in every cell, let the grid go on
        shared.failure = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                          "traceback": traceback.format_exc()}
    for n, k in enumerate(todo):
        if on_start and n:
            on_start(k)
        rec = _evaluate_cell(specs[k], paths[k], shared, protocol, started, t_unit)
        results[k] = (rec, False)
        if k in handles:
            handles[k].finish(rec)
    return [r for r in results if r is not None]


def _build_loaders(spec: RunSpec, shared: _Shared, presents: dict[str, torch.Tensor],
                   indices: dict[str, torch.Tensor], names: tuple[str, ...]) -> dict[str, Loader]:
    cfg = spec.train
    augment = None
    if spec.dataset.augment is not None and "image" in shared.splits["train"].inputs \
            and "pixels" in shared.splits["train"].inputs["image"]:
        from .data.augment import ImageAugment

        sp = shared.splits["train"]
        augment = ImageAugment(spec.dataset.augment, sp.image_mean, sp.image_std, shared.device, spec.train_seed)
    return {name: Loader(shared.splits[name], presents[name],
                         cfg.batch_size if name == "train" else cfg.eval_batch_size, shuffle=name == "train",
                         seed=spec.train_seed, device=shared.device, indices=indices[name],
                         augment=augment if name == "train" else None)
            for name in names}


def _train_or_restore(spec: RunSpec, shared: _Shared, ckpt: Path, *, save: bool, on_epoch: OnEpoch,
                      force: bool) -> None:
    """Build the pipeline and train it (or restore the selected weights of this training from its
    checkpoint), then predict the validation split; fills ``shared``."""
    cfg, device = spec.train, shared.device
    presents, indices, _ = presence_masks(spec, shared.splits)
    seed_everything(spec.train_seed)
    pipeline = build_pipeline(spec, shared.info).to(device)
    if spec.encoders.freeze:
        from .features import attach_frozen_features

        shared.splits, shared.feature_cache = attach_frozen_features(pipeline, spec, shared.info, shared.splits,
                                                                     device)
    stored = None if force else load_checkpoint(ckpt, spec.training_id)
    if device.type == "cuda":
        if cfg.channels_last:
            pipeline = pipeline.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(device)
    loaders = _build_loaders(spec, shared, presents, indices, ("train", "val"))
    if stored is not None:
        shared.trained = restore_pipeline(pipeline, stored)
    else:
        if cfg.compile:
            pipeline.method.compile()
        result = fit(pipeline, loaders, cfg, primary_metric=spec.dataset.primary_metric, task=shared.info.task,
                     on_epoch=on_epoch)
        shared.trained = Trained(
            pipeline=pipeline, curves=result.curves, best_epoch=result.best_epoch,
            train_seconds=result.train_seconds, samples_seen=result.samples_seen, steps=result.steps,
            parameters=sum(p.numel() for p in pipeline.parameters()),
            peak_memory_mb=round(_peak_memory_mb(device), 1), selection=result.selection,
            diagnostics=result.diagnostics)
        if save:
            save_checkpoint(ckpt, spec.training_id, shared.trained)
    shared.val = predict(pipeline, loaders["val"], amp=cfg.amp)


def _evaluate_cell(spec: RunSpec, path: Path, shared: _Shared, protocol: str | None, started: str,
                   t_unit: float) -> RunRecord:
    """Evaluate the unit's selected weights under ``spec``'s test mask and write its record."""
    presents, indices, mask_summary = presence_masks(spec, shared.splits)
    fields: dict[str, Any] = {"ceiling": shared.ceiling, "masks": mask_summary,
                              "data_fingerprint": shared.fingerprint, "started_at": started,
                              "training_id": spec.training_id, "feature_cache": shared.feature_cache}
    timing: dict[str, Any] = {}
    trained = shared.trained
    if shared.failure is not None or trained is None:
        fields.update(shared.failure or {"status": "failed", "error": "training did not finish"})
    else:
        fields["curves"], fields["best_epoch"] = trained.curves, trained.best_epoch
        fields["selection"] = trained.selection or None
        fields["diagnostics"] = trained.diagnostics or None
        timing.update(
            train_seconds=round(trained.train_seconds, 3),
            samples_per_second=round(trained.samples_seen / max(trained.train_seconds, 1e-9), 2),
            step_ms=round(1000 * trained.train_seconds / max(trained.steps, 1), 3),
            steps=trained.steps, parameters=trained.parameters, peak_memory_mb=trained.peak_memory_mb,
        )
        try:
            fields.update(_test(spec, path, shared, presents, indices, timing))
            fields["status"] = "ok"
        except MMBenchError:
            raise
        except Exception as exc:  # a bug in evaluation: this cell fails, the others go on
            fields.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    timing["wall_seconds"] = round(time.perf_counter() - t_unit, 3)
    record = new_record(spec, protocol, env=environment(shared.device), timing=Timing(**timing),
                        finished_at=_now(), **fields)
    write_record(path, record)
    return record


def _test(spec: RunSpec, path: Path, shared: _Shared, presents: dict[str, torch.Tensor],
          indices: dict[str, torch.Tensor], timing: dict[str, Any]) -> dict[str, Any]:
    """Test predictions and metrics of one cell; writes its predictions file."""
    assert shared.trained is not None and shared.val is not None
    t_eval = time.perf_counter()
    pipeline, info, val = shared.trained.pipeline, shared.info, shared.val
    loader = _build_loaders(spec, shared, presents, indices, ("test",))["test"]
    save_aux = tuple(getattr(pipeline.method, "save_aux", ()))
    test = predict(pipeline, loader, amp=spec.train.amp, save_aux=save_aux, embedding_rows=EMBEDDING_ROWS)
    posterior = shared.splits["test"].extra.get("bayes_posterior")
    metrics = Metrics(
        val=compute_metrics(val.logits, val.y, info.task),
        test=compute_metrics(test.logits, test.y, info.task),
        test_by_pattern=metrics_by_pattern(test.logits, test.y, test.present, info.task),
        regret=None if posterior is None else bayes_regret(test.logits, test.y, test.present, test.index, posterior),
    )
    latents = shared.splits["test"].extra.get("latents")
    probes = probe(*collect(pipeline, loader), latents) if latents else None
    pred_path = path.with_suffix(".npz")
    write_predictions(pred_path, {"logits": test.logits, "y": test.y, "present": test.present,
                                  "index": test.index, **{f"aux_{k}": v for k, v in test.aux.items()},
                                  **{f"emb_{m}": v for m, v in test.embeddings.items()}})
    timing["eval_seconds"] = round(time.perf_counter() - t_eval, 3)
    out = {"metrics": metrics, "files": {"predictions": pred_path.name}}
    if probes is not None:
        out["probes"] = probes
    return out

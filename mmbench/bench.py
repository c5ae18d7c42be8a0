"""``mmbench bench``: what a card's methods cost to train and evaluate, measured in one process.

For each method (resolved on the card exactly as ``mmbench run`` would: encoders, hidden size, head,
balancer, trainer settings, ``--set`` overrides) the bench builds the pipeline and measures:

* **step**: one training step (forward, loss terms, backward, gradient clipping, the run's optimiser
  step; autocast and channels-last as the card says), on one fixed training batch, the method in its
  last stage and its balancer set up (untimed). Methods are timed *round-robin in a shuffled order*
  and each round's time is divided by ``late_fusion``'s in the same round: the table gives the median
  and interquartile range of these paired ratios, so a drift of a shared machine hits both sides.
* **loader / step**: training-batch throughput of the run's loader (gather, copy to the device,
  normalisation, augmentation) divided by the method's step throughput (samples per second): above 1
  the loader keeps up.
* **eval**: evaluation throughput (``predict`` on the validation loader), samples per second.
* **peak memory**: the most GPU memory a step allocated (CUDA only; CPU rows show none).
* **frozen speed-up**: the same method in frozen-encoder mode (:mod:`mmbench.features`), timed in the
  same rounds: end-to-end step time / frozen step time (paired per round); the one-off cost of
  computing the cached features is reported separately.

When the card's data are not on this machine the bench runs on a *stand-in*: random data of the
card's image size and channels, with ``--stand-in classes=C,cat=K,num=N`` columns (default: 8
classes, 2 categorical columns of 4 levels, 4 continuous), so the encoders are the card's and only the
table width and class count are assumed. The JSON says which.

Goals (issue 14, DVM card): each method's step <= 1.3x late fusion (<= 2x with MCE), loader >= 5x the
step, frozen cells >= 10x faster than end-to-end ones. The table marks each.
"""

from __future__ import annotations

import random
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import resolve
from .data.base import DataInfo, Split, TabularSchema
from .errors import DataError, MMBenchError
from .pipeline import Pipeline
from .protocols import MissingSpec, combine, simulate_presence
from .spec import RunSpec

BASELINE = "late_fusion"
GOAL_STEP, GOAL_STEP_MCE, GOAL_LOADER, GOAL_FROZEN = 1.3, 2.0, 5.0, 10.0


@dataclass
class Subject:
    """One pipeline under test (a method, end to end or frozen)."""

    name: str
    frozen: bool
    spec: RunSpec
    pipeline: Pipeline | None = None
    optimizer: Any = None
    rows: Any = None
    batch: Any = None
    splits: dict[str, Split] | None = None
    times: list[float] = field(default_factory=list)
    params: list[torch.nn.Parameter] = field(default_factory=list)
    peak_mb: float | None = None
    error: str = ""


def parse_stand_in(text: str | None) -> dict[str, int]:
    """``classes=286,cat=4,num=13`` -> the stand-in's shape (unknown keys are an error)."""
    shape = {"classes": 8, "cat": 2, "num": 4}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        k, sep, v = part.partition("=")
        if not sep or k.strip() not in shape or not v.strip().isdigit():
            raise MMBenchError(f"--stand-in {text!r}: expected classes=C,cat=K,num=N with whole numbers")
        shape[k.strip()] = int(v)
    if shape["classes"] < 2 or shape["cat"] + shape["num"] < 1:
        raise MMBenchError(f"--stand-in {text!r}: needs at least 2 classes and one column")
    return shape


def stand_in_data(spec: RunSpec, shape: dict[str, int], n: int, seed: int) -> tuple[DataInfo, dict[str, Split]]:
    """Random data with the card's image size and ``shape``'s classes and columns."""
    size = int(getattr(spec.dataset.options, "image_size", 32))
    g = torch.Generator().manual_seed(seed)
    schema = TabularSchema(cat_cardinalities=(4,) * shape["cat"], n_num=shape["num"])
    info = DataInfo(name=f"{spec.dataset.name} (stand-in)", task="multiclass", num_classes=shape["classes"],
                    image_shape=(3, size, size), tabular=schema)
    splits = {}
    for name in ("train", "val", "test"):
        splits[name] = Split(
            inputs={"image": {"pixels": torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)},
                    "tabular": {"cat": torch.randint(0, 4, (n, shape["cat"]), generator=g),
                                "num": torch.randn(n, shape["num"], generator=g)}},
            y=torch.randint(0, shape["classes"], (n,), generator=g), natural_present=torch.ones(n, 2, dtype=torch.bool))
    return info, splits


def _presence(splits: dict[str, Split], rate: float, seed: int) -> dict[str, torch.Tensor]:
    out = {}
    for name, sp in splits.items():
        sim = simulate_presence(len(sp), MissingSpec("both", rate), name, seed, sp.natural_present.numpy())
        out[name] = torch.from_numpy(combine(sim, sp.natural_present.numpy())[0])
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(s: Subject, device: torch.device) -> None:
    """One optimiser step of ``s`` on its batch, as ``mmbench.train.fit`` takes it."""
    assert s.pipeline is not None
    cfg, batch = s.spec.train, s.batch
    if s.rows is not None:
        batch = batch.select(s.rows(batch))
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
        out = s.pipeline(batch)
        terms = s.pipeline.loss_terms(batch, out)
    total = torch.stack([t.float() for t in terms.values()]).sum()
    s.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(s.params, cfg.grad_clip)
    s.optimizer.step()


def _setup(s: Subject, info: DataInfo, splits: dict[str, Split], presents: dict[str, torch.Tensor],
           rows: torch.Tensor, device: torch.device, warmup: int) -> float | None:
    """Build, set up and warm up ``s``; returns the seconds spent computing frozen features, if any."""
    from .runner import build_pipeline
    from .train import Loader, make_optimizer, seed_everything

    seed_everything(s.spec.train_seed)
    s.pipeline = build_pipeline(s.spec, info).to(device)
    feature_seconds = None
    if s.frozen:
        from .features import attach_frozen_features

        t0 = time.perf_counter()
        splits, status = attach_frozen_features(s.pipeline, s.spec, info, splits, device)
        feature_seconds = time.perf_counter() - t0 if status == "built" else 0.0
    s.splits = splits
    if device.type == "cuda" and s.spec.train.channels_last:
        s.pipeline = s.pipeline.to(memory_format=torch.channels_last)
    loaders = {k: Loader(splits[k], presents[k], s.spec.train.batch_size, shuffle=k == "train",
                         seed=s.spec.train_seed, device=device) for k in ("train", "val")}
    s.pipeline.balancer.setup(s.pipeline, loaders)  # e.g. MCE's reference predictors (untimed)
    stages = s.pipeline.method.stages()
    s.pipeline.method.begin_stage(stages[-1].name)
    s.rows = stages[-1].rows
    s.pipeline.train()
    s.params = [p for p in s.pipeline.parameters() if p.requires_grad]
    s.optimizer = make_optimizer(s.params, s.spec.train)
    s.batch = splits["train"].batch(rows, presents["train"], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        _step(s, device)
    _sync(device)
    if device.type == "cuda":
        s.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    return feature_seconds


def _throughput(fn: Any, device: torch.device, repeat: int = 3) -> float:
    """Samples per second of ``fn`` (which returns how many samples it processed; best of ``repeat``)."""
    best = 0.0
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        n = fn()
        _sync(device)
        best = max(best, n / max(time.perf_counter() - t0, 1e-9))
    return best


def _iqr(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, statistics.median(xs), q3


def run_bench(methods: list[str], dataset: str, *, overrides: dict[str, Any] | None = None, rounds: int = 10,
              steps: int = 2, warmup: int = 2, rate: float = 0.5, seed: int = 0, frozen: bool = True,
              stand_in: str | None = None, data_root: str | None = None, config_dir: list[str] | None = None,
              log: Any = print) -> dict[str, Any]:
    """Measure ``methods`` on ``dataset`` (see the module docstring); returns the JSON-able result."""
    from .core import data_root as resolve_root
    from .runner import load_data
    from .train import Loader, predict, resolve_device

    names = list(dict.fromkeys([BASELINE, *methods]))
    cell = MissingSpec("both", rate)
    base_over = {**(overrides or {}), "encoders.freeze": False}
    specs = {m: resolve(m, dataset, cell, seed, overrides=base_over, config_dir=config_dir) for m in names}
    first = specs[BASELINE]
    device = resolve_device(first.train.device)
    if first.train.num_threads > 0:
        torch.set_num_threads(first.train.num_threads)
    shape = parse_stand_in(stand_in)
    batch_size = first.train.batch_size
    try:
        info, splits, _, _ = load_data(first, resolve_root(data_root))
        data = f"{dataset} (the card's data)"
    except DataError as exc:
        n = max(4 * batch_size, 64)
        info, splits = stand_in_data(first, shape, n, seed)
        data = (f"stand-in for {dataset} ({str(exc).splitlines()[0][:80]}...): random data, {n} rows per split, "
                f"{info.image_shape[1]} px images, {shape['classes']} classes, {shape['cat']} categorical + "
                f"{shape['num']} continuous columns")
    log(f"bench on {device}: {data}")
    presents = _presence(splits, rate, seed)
    rows = torch.randperm(len(splits["train"]), generator=torch.Generator().manual_seed(seed))[:batch_size]
    subjects: list[Subject] = []
    feature_seconds: float | None = None
    for m in names:
        for is_frozen in (False, True) if frozen else (False,):
            spec = specs[m] if not is_frozen else resolve(m, dataset, cell, seed, config_dir=config_dir,
                                                          overrides={**base_over, "encoders.freeze": True})
            s = Subject(m, is_frozen, spec)
            try:
                fs = _setup(s, info, splits, presents, rows, device, warmup)
                if fs:
                    feature_seconds = fs
            except Exception as exc:  # noqa: BLE001 - the table goes on without this subject
                s.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                s.pipeline = None
            subjects.append(s)
            log(f"  set up {m}{' (frozen)' if is_frozen else ''}: {'ok' if not s.error else s.error}")
    order = [s for s in subjects if not s.error]
    shuffle = random.Random(seed).shuffle
    for r in range(rounds):
        shuffle(order)
        for s in order:
            if s.error:
                continue
            try:
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    _step(s, device)
                _sync(device)
                s.times.append((time.perf_counter() - t0) / steps)
            except Exception as exc:  # noqa: BLE001
                s.error = str(exc).splitlines()[0]
        log(f"  round {r + 1}/{rounds} done")
    base = next(s for s in subjects if s.name == BASELINE and not s.frozen)
    if base.error or not base.times:
        raise MMBenchError(f"bench: {BASELINE} could not be timed: {base.error or 'no rounds'}")
    # loader throughput (the run's training loader, augmentation included) and evaluation throughput
    from .data.augment import ImageAugment

    sp = splits["train"]
    aug = ImageAugment(first.dataset.augment, sp.image_mean, sp.image_std, device, seed) \
        if first.dataset.augment is not None else None
    n_load = min(len(sp), 4 * batch_size)
    loader = Loader(sp, presents["train"], batch_size, shuffle=True, seed=seed, device=device,
                    indices=torch.arange(n_load), augment=aug)
    loader_sps = _throughput(lambda: sum(len(b) for b in loader), device)
    by_key = {(s.name, s.frozen): s for s in subjects}
    results = []
    for m in names:
        s = by_key[(m, False)]
        f = by_key.get((m, True))
        row: dict[str, Any] = {"method": m, "balancer": s.spec.balancer.name, "error": s.error or None}
        if not s.error and s.times:
            ratios = [t / b for t, b in zip(s.times, base.times, strict=True)]
            q1, med, q3 = _iqr(ratios)
            step_s = statistics.median(s.times)
            n_val = min(len(splits["val"]), 2 * s.spec.train.eval_batch_size)
            val_loader = Loader(s.splits["val"], presents["val"], s.spec.train.eval_batch_size, device=device,
                                indices=torch.arange(n_val))
            eval_sps = _throughput(lambda s=s, vl=val_loader: len(predict(s.pipeline, vl, amp=s.spec.train.amp).y),
                                   device, repeat=2)
            row.update(step_ms=1e3 * step_s, ratio=med, ratio_iqr=[q1, q3],
                       loader_over_step=loader_sps / (len(s.batch) / step_s), eval_samples_per_s=eval_sps,
                       peak_memory_mb=s.peak_mb, parameters=sum(p.numel() for p in s.pipeline.parameters()))
            s.pipeline.train()
        if f is not None:
            if f.error or not f.times or s.error:
                row["frozen"] = {"error": f.error or "end-to-end step failed"}
            else:
                sp_ratios = [a / b for a, b in zip(s.times, f.times, strict=True)]
                fq1, fmed, fq3 = _iqr(sp_ratios)
                row["frozen"] = {"step_ms": 1e3 * statistics.median(f.times), "speedup": fmed,
                                 "speedup_iqr": [fq1, fq3], "peak_memory_mb": f.peak_mb,
                                 "trainable_parameters": sum(p.numel() for p in f.params)}
        row["goal_step"] = GOAL_STEP_MCE if s.spec.balancer.name == "mce" else GOAL_STEP
        results.append(row)
    return {
        "dataset": dataset, "data": data, "device": str(device), "threads": torch.get_num_threads(),
        "batch_size": batch_size, "image_size": info.image_shape[1:], "hidden": first.dataset.hidden,
        "encoders": {"image": first.encoders.image.name, "tabular": first.encoders.tabular.kind},
        "amp": first.train.amp and device.type == "cuda", "rounds": rounds, "steps_per_round": steps,
        "missing": cell.describe(), "loader_samples_per_s": loader_sps, "augment": first.dataset.augment is not None,
        "feature_cache_seconds": feature_seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "goals": {"step": GOAL_STEP, "step_mce": GOAL_STEP_MCE, "loader": GOAL_LOADER, "frozen": GOAL_FROZEN},
        "methods": results, "torch": torch.__version__, "numpy": np.__version__,
    }

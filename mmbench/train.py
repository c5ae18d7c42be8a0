"""The training / early-stopping / evaluation loop.

One optimiser per stage over the parameters that require grad, each stage with its own settings
(``TrainConfig.for_stage``: epochs, batch size, optimiser, schedule with optional warm-up, clipping,
early stopping), bf16 autocast on CUDA, early stopping on the validation primary metric, the best
validation epoch over every stage kept for testing (``stage_selection``), and a non-finite loss that
fails the run cleanly.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import TrainConfig
from .data.base import Split
from .data.batch import Batch
from .diagnostics import TrainingDiagnostics
from .errors import ConfigError, RunFailed
from .metrics import compute_metrics
from .models.base import Stage
from .pipeline import Pipeline


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Loader:
    """Vectorised mini-batches over a :class:`Split` (rows ``indices``) with a presence mask.

    Shuffling uses its own generator seeded from the run's training seed, so the batch order is
    reproducible and independent of the missingness draw. In training, a final batch of one row is
    dropped (BatchNorm cannot normalise a single sample). ``augment`` (training loaders only) maps
    each batch, on the device, to its augmented copy (:class:`mmbench.data.augment.ImageAugment`).
    """

    def __init__(self, split: Split, present: Tensor, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, device: torch.device | str = "cpu", indices: Tensor | None = None,
                 augment: Callable[[Batch], Batch] | None = None) -> None:
        self.split = split
        self.present = present
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.device = torch.device(device)
        self.indices = torch.arange(len(split)) if indices is None else indices
        self._gen = torch.Generator().manual_seed(int(seed))
        self.augment = augment

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        idx = self.indices
        if self.shuffle:
            idx = idx[torch.randperm(len(idx), generator=self._gen)]
        device = None if self.device.type == "cpu" else self.device
        for start in range(0, len(idx), self.batch_size):
            chunk = idx[start:start + self.batch_size]
            if self.shuffle and len(chunk) < 2:
                continue
            batch = self.split.batch(chunk, self.present, device)
            yield batch if self.augment is None else self.augment(batch)


@dataclass
class EvalOutput:
    """Predictions of one split."""

    logits: np.ndarray
    y: np.ndarray
    present: np.ndarray
    index: np.ndarray
    aux: dict[str, np.ndarray] = field(default_factory=dict)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> first rows x D (float16)


@torch.no_grad()
def predict(pipeline: Pipeline, loader: Loader, amp: bool = False, save_aux: tuple[str, ...] = (),
            embedding_rows: int = 0) -> EvalOutput:
    """Run the pipeline in eval mode over ``loader`` and gather logits (float32), named aux tensors and,
    for the first ``embedding_rows`` rows, the pooled per-modality embeddings (float16)."""
    pipeline.eval()
    logits, ys, pres, idx = [], [], [], []
    aux: dict[str, list[Tensor]] = {k: [] for k in save_aux}
    emb: dict[str, list[Tensor]] = {}
    seen = 0
    device_type = loader.device.type
    for batch in loader:
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=amp and device_type == "cuda"):
            out = pipeline(batch)
        logits.append(out.logits.float().cpu())
        ys.append(batch.y.cpu())
        pres.append(batch.present.cpu())
        idx.append(batch.index.cpu())
        for k in save_aux:
            if k in out.aux:
                aux[k].append(out.aux[k].float().cpu())
        take = min(len(batch), embedding_rows - seen)
        for m, e in out.embeddings.items() if take > 0 else ():
            emb.setdefault(m, []).append(e[:take].to(torch.float16).cpu())
        seen += len(batch)
    cat = lambda xs: torch.cat(xs).numpy() if xs else np.zeros((0,))  # noqa: E731
    return EvalOutput(cat(logits), cat(ys), cat(pres), cat(idx), {k: cat(v) for k, v in aux.items() if v},
                      {m: cat(v) for m, v in emb.items()})


@dataclass
class FitResult:
    """What training produced; ``selection`` says which stage and epoch the kept weights come from."""

    curves: list[dict[str, Any]]
    best_epoch: int
    best_val: float | None
    train_seconds: float
    samples_seen: int
    steps: int
    selection: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The stage's optimiser (``optimizer``, ``lr``, ``weight_decay``; ``betas`` for Adam/AdamW,
    ``momentum`` and ``nesterov`` for SGD). Adam/AdamW use PyTorch's fused kernel where every parameter
    allows it (floating point, on CPU or CUDA): the same update rule, several times faster than the
    per-parameter loop on CPU."""
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, fused=fused or None)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                           nesterov=cfg.nesterov)


def lr_factor(cfg: TrainConfig, total_steps: int, warmup_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the learning rate at optimiser step ``step`` (0-based) of a stage.

    A linear warm-up over ``warmup_steps``, then, with ``p`` the progress through the remaining steps:
    ``cosine`` ``(1 + cos(pi p)) / 2``; ``constant`` 1; ``linear`` 1 until ``p = decay_start``, then
    linearly to 0 at the end (per step; MMIN's per-epoch rule ends one decay step above 0); ``step``
    ``step_gamma ** (epoch // step_epochs)`` (PyTorch's StepLR stepped per epoch); ``poly``
    ``(1 - p) ** poly_power``.
    """
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if cfg.scheduler == "constant":
            return 1.0
        if cfg.scheduler == "step":
            return cfg.step_gamma ** (step // max(1, steps_per_epoch) // cfg.step_epochs)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if cfg.scheduler == "linear":
            return 1.0 if progress <= cfg.decay_start else (1.0 - progress) / (1.0 - cfg.decay_start)
        if cfg.scheduler == "poly":
            return (1.0 - progress) ** cfg.poly_power
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def count_rows(loader: Loader, rows: Callable[[Batch], Tensor]) -> int:
    """Training rows that pass a stage's ``rows`` filter."""
    total = 0
    for start in range(0, len(loader.indices), 1024):
        chunk = loader.indices[start:start + 1024]
        total += int(rows(loader.split.batch(chunk, loader.present)).sum())
    return total


@dataclass
class _Best:
    """The best validation epoch so far over the stages whose weights can be kept."""

    score: float
    stage: int
    epoch: int  # 1-based index into the curves
    state: dict[str, Any]


def fit(pipeline: Pipeline, loaders: dict[str, Loader], cfg: TrainConfig, *, primary_metric: str,
        task: str, on_epoch: Callable[[dict[str, Any]], None] | None = None,
        diagnostics: TrainingDiagnostics | None = None) -> FitResult:
    """Train every stage of the method, each with its settings (``cfg.for_stage``), and keep the best
    validation epoch over every stage that can predict (``stage_selection: all``; a tie goes to the later
    stage) or of the last stage (``last``). ``diagnostics`` (default: a :class:`TrainingDiagnostics`)
    probes a few steps and the kept weights (:mod:`mmbench.diagnostics`)."""
    diag = diagnostics if diagnostics is not None else TrainingDiagnostics()
    method = pipeline.method
    device_type = loaders["train"].device.type
    pipeline.balancer.setup(pipeline, loaders)
    curves: list[dict[str, Any]] = []
    start, samples, steps = time.perf_counter(), 0, 0
    stages: list[Stage] = method.stages()
    names = [st.name for st in stages]
    unknown = [n for n in cfg.stages if n not in names]
    if unknown:
        raise ConfigError(f"train.stages.{unknown[0]}: {type(method).__name__} has no such stage "
                          f"(stages: {', '.join(names)})")
    unset = [st.name for st in stages if "epochs" not in cfg.stages.get(st.name, {}) and st.epochs is None]
    if len(stages) > 1 and unset:
        raise ConfigError(f"train.stages.{unset[0]}.epochs: {type(method).__name__} trains in the stages "
                          f"{', '.join(names)}; each needs its epochs (resolve() splits train.epochs by the "
                          "method YAML's fair: stages)")
    last = len(stages) - 1
    across = cfg.stage_selection == "all" and stages[last].select_best
    best: _Best | None = None
    report: list[dict[str, Any]] = []
    train_batch_size = loaders["train"].batch_size
    for si, stage in enumerate(stages):
        scfg = cfg.for_stage(stage.name)
        use_amp = scfg.amp and device_type == "cuda"
        if stage.rows is not None:
            n_rows = count_rows(loaders["train"], stage.rows)
            if n_rows < stage.min_rows:
                raise RunFailed(f"stage {stage.name!r} of {type(method).__name__} needs at least {stage.min_rows} "
                                f"training rows passing its filter, found {n_rows}")
        method.begin_stage(stage.name)
        params = [p for p in pipeline.parameters() if p.requires_grad]
        opt = make_optimizer(params, scfg)
        epochs = int(cfg.stages.get(stage.name, {}).get("epochs", stage.epochs or cfg.epochs))
        loaders["train"].batch_size = scfg.batch_size
        per_epoch = len(loaders["train"]) if scfg.max_steps_per_epoch is None else min(
            len(loaders["train"]), scfg.max_steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_factor(scfg, max(1, epochs * per_epoch), scfg.warmup_epochs * per_epoch, per_epoch))
        best_state, stage_best, stage_best_epoch, bad_epochs = None, None, None, 0
        candidate = stage.select_best and stage.predicts and (across or si == last)
        for epoch in range(epochs):
            method.begin_epoch(len(curves))
            pipeline.balancer.begin_epoch(len(curves))
            pipeline.train()
            sums: dict[str, Tensor] = {}
            n_batches = 0
            t0 = time.perf_counter()
            for step, batch in enumerate(loaders["train"]):
                if scfg.max_steps_per_epoch is not None and step >= scfg.max_steps_per_epoch:
                    break
                batch = pipeline.balancer.train_batch(batch)  # e.g. MCE's per-epoch masks
                if len(batch) < 2:  # as the loader: BatchNorm cannot normalise a single row
                    continue
                if stage.rows is not None:
                    keep = stage.rows(batch)
                    if int(keep.sum()) < 2:
                        continue
                    batch = batch.select(keep)
                with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=use_amp):
                    out = pipeline(batch)
                    terms = pipeline.loss_terms(batch, out)
                if diag.wants(len(curves), step):
                    diag.probe(method, stage.name, len(curves), step, batch, out, terms, params)
                total = torch.stack([t.float() for t in terms.values()]).sum()
                opt.zero_grad(set_to_none=True)
                total.backward()
                if scfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, scfg.grad_clip)
                opt.step()
                sched.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v.detach().float()
                sums["total"] = sums.get("total", 0.0) + total.detach()
                n_batches += 1
                samples += len(batch)
                steps += 1
            epoch_seconds = time.perf_counter() - t0
            losses = {k: float(v) / max(1, n_batches) for k, v in sums.items()}  # one host sync per epoch
            if not all(math.isfinite(v) for v in losses.values()):
                bad = [k for k, v in losses.items() if not math.isfinite(v)]
                raise RunFailed(f"non-finite loss ({', '.join(bad)}) in stage {stage.name!r} epoch {epoch + 1}")
            val = predict(pipeline, loaders["val"], amp=scfg.amp)
            val_metrics = compute_metrics(val.logits, val.y, task)
            score = val_metrics.get(primary_metric)
            row = {"stage": stage.name, "epoch": epoch + 1, "train_loss": losses, "val": val_metrics,
                   "lr": opt.param_groups[0]["lr"], "seconds": epoch_seconds}
            stats = getattr(pipeline.balancer, "stats", None)
            if stats:  # balancer diagnostics of the epoch's last step (e.g. MCE's a_m, b_m, phi_m)
                row["balancer"] = {k: torch.as_tensor(v).detach().float().cpu().tolist() for k, v in stats.items()}
            curves.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if not stage.select_best:
                continue
            improved = score is not None and (stage_best is None or score > stage_best)
            if improved:
                stage_best, stage_best_epoch, bad_epochs = score, len(curves), 0
                best_state = copy.deepcopy(pipeline.state_dict())
            else:
                bad_epochs += 1
            if candidate and score is not None and (best is None or score > best.score
                                                    or (score == best.score and si > best.stage)):
                state = best_state if improved else copy.deepcopy(pipeline.state_dict())
                best = _Best(float(score), si, len(curves), state)
            if not improved and epoch + 1 >= scfg.min_epochs and bad_epochs >= scfg.patience:
                break
        if best_state is not None:
            pipeline.load_state_dict(best_state)
        why = None
        if not candidate:
            why = (stage.why_not or "its model cannot predict" if not stage.predicts else
                   "the stage keeps its last epoch (select_best is off)" if not stage.select_best else
                   "stage_selection: last" if cfg.stage_selection == "last" else
                   "the last stage keeps its last epoch, so no earlier stage is selected")
        report.append({"stage": stage.name, "epochs": sum(r["stage"] == stage.name for r in curves),
                       "best_epoch": stage_best_epoch, "best_val": stage_best, "candidate": candidate, "why_not": why})
    loaders["train"].batch_size = train_batch_size
    if best is not None and best.stage != last:
        pipeline.load_state_dict(best.state)
        method.select_stage(stages[best.stage].name)
    best_epoch = best.epoch if best is not None else len(curves)  # no val score: test the final weights
    kept = stages[best.stage].name if best is not None else stages[last].name
    selection = {"rule": cfg.stage_selection, "stage": kept, "epoch": best_epoch,
                 "val": None if best is None else best.score, "stages": report}
    train_seconds = time.perf_counter() - start
    diag.summarise(pipeline, loaders["val"], amp=cfg.amp)
    return FitResult(curves, best_epoch, None if best is None else best.score, train_seconds, samples, steps,
                     selection, diag.as_dict())

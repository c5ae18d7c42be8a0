"""The training of a unit: its lock, and its selected weights saved for later evaluations.

Cells that differ only in test-time missingness share one training (``RunSpec.training_id``). When a
training serves more than one cell, the runner saves its selected weights under
``<output_dir>/checkpoints/<dataset>/<method>/<training_id>.pt`` (``torch.save`` of plain tensors and
numbers, read back with ``torch.load(weights_only=True)``: loading never runs code). An invocation
that finds some cells of the unit without a record (an interrupted sweep, a test rate added later)
restores these weights and evaluates the missing cells without training again. Delete the
``checkpoints/`` folder to reclaim the space; the records do not need it.

What a checkpoint holds, and why that is enough: a restored pipeline is only *evaluated*, never
trained further, and evaluation reads the parameters and persistent buffers (the ``state_dict``) and
the stage the method is in. The method is put into its last stage (``begin_stage``, as after
training) before the ``state_dict`` is loaded. State that lives outside the ``state_dict`` is
training-only in every built-in: MCE's readiness flags and reference statistics, DPL's record of the
missing cases seen, DMRNet's epoch counter (its decision is a buffer); IF-MMIN's ``stage`` is set by
``begin_stage``. ``tests/test_trainonce.py`` checks, for every built-in method, head and balancer,
that restored weights predict exactly what the in-memory ones do. A new method whose evaluation reads
other state must keep it in buffers.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .pipeline import Pipeline
from .spec import RunSpec

#: version of the checkpoint layout
CHECKPOINT_FORMAT = 1


@dataclass
class Trained:
    """A trained pipeline (its selected weights) and what its training measured."""

    pipeline: Pipeline
    curves: list[dict[str, Any]]
    best_epoch: int
    train_seconds: float
    samples_seen: int
    steps: int
    parameters: int
    peak_memory_mb: float | None = None
    #: which stage and epoch the kept weights come from (train.FitResult.selection)
    selection: dict[str, Any] | None = None
    #: training-dynamics diagnostics (mmbench.diagnostics)
    diagnostics: dict[str, Any] | None = None


def unit_dir(output_dir: Path, spec: RunSpec) -> Path:
    """The folder of the records of ``spec``'s method on its dataset."""
    return Path(output_dir) / spec.dataset.name / spec.label


def training_lock(output_dir: Path, spec: RunSpec) -> Any:
    """An inter-process lock on the training of ``spec`` (hidden ``.train-<training_id>.lock`` beside its
    records): two workers given cells of one training train it once."""
    from filelock import FileLock

    folder = unit_dir(output_dir, spec)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f".train-{spec.training_id}.lock")


def checkpoint_path(output_dir: Path, spec: RunSpec) -> Path:
    """Where the selected weights of ``spec``'s training are saved."""
    return Path(output_dir) / "checkpoints" / spec.dataset.name / spec.label / f"{spec.training_id}.pt"


def save_checkpoint(path: Path, training_id: str, trained: Trained) -> None:
    """Write the selected weights and the training's measurements atomically (temp file + rename)."""
    payload = {
        "format": CHECKPOINT_FORMAT, "training_id": training_id,
        "state_dict": {k: v.detach().cpu() for k, v in trained.pipeline.state_dict().items()},
        "curves": trained.curves, "best_epoch": trained.best_epoch, "train_seconds": trained.train_seconds,
        "samples_seen": trained.samples_seen, "steps": trained.steps, "parameters": trained.parameters,
        "peak_memory_mb": trained.peak_memory_mb, "selection": trained.selection,
        "diagnostics": trained.diagnostics,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, training_id: str) -> dict[str, Any] | None:
    """The saved payload of ``training_id``, or None when there is none (an unreadable or foreign file
    is ignored with a warning: the training runs again)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means "train again"
        warnings.warn(f"{path}: unreadable checkpoint ({type(exc).__name__}); training again", stacklevel=2)
        return None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT \
            or payload.get("training_id") != training_id:
        warnings.warn(f"{path}: not a checkpoint of training {training_id}; training again", stacklevel=2)
        return None
    return payload


def restore_pipeline(pipeline: Pipeline, payload: dict[str, Any]) -> Trained:
    """Put a freshly built pipeline into its last stage, load the saved weights into it, and select the
    stage the training kept (a multi-stage method may keep an earlier stage's weights)."""
    stages = pipeline.method.stages()
    pipeline.method.begin_stage(stages[-1].name)
    pipeline.load_state_dict(payload["state_dict"])
    selection = payload.get("selection") or None
    if selection and selection.get("stage"):
        pipeline.method.select_stage(selection["stage"])
    return Trained(pipeline=pipeline, curves=payload["curves"], best_epoch=int(payload["best_epoch"]),
                   train_seconds=float(payload["train_seconds"]), samples_seen=int(payload["samples_seen"]),
                   steps=int(payload["steps"]), parameters=int(payload["parameters"]),
                   peak_memory_mb=payload.get("peak_memory_mb"), selection=selection,
                   diagnostics=payload.get("diagnostics"))

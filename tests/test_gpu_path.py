"""The GPU path's settings, tested where a CPU can: torch.compile behind train.compile, channels-last
and bf16 autocast as spec fields (CUDA-only branches are documented in docs/performance.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmbench import runner
from mmbench.config import resolve
from mmbench.errors import ConfigError
from mmbench.protocols import MissingSpec

FAST = {"train.epochs": 1, "data.n_samples": 160, "train.max_steps_per_epoch": 2}


def test_compile_flag_compiles_the_method_before_training(tmp_path: Path, monkeypatch) -> None:
    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    spec = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides={**FAST, "train.compile": True})
    rec, _ = runner.execute(spec, tmp_path)
    assert rec.status == "ok" and compiled == ["LateFusion"]
    plain = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides=FAST)
    runner.execute(plain, tmp_path)
    assert compiled == ["LateFusion"] and plain.run_id != spec.run_id


def test_gpu_settings_are_typed_spec_fields() -> None:
    spec = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0,
                   overrides={"train.channels_last": False, "train.amp": False})
    assert spec.train.channels_last is False and spec.to_dict()["train"]["compile"] is False
    with pytest.raises(ConfigError, match="train.channels_last"):
        resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides={"train.channels_last": "on"})


def test_host_to_device_copy_on_cpu_is_a_plain_copy() -> None:
    from mmbench.data.base import to_device

    t = torch.arange(6)
    assert torch.equal(to_device(t, "cpu"), t)

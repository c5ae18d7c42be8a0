"""late_fusion on synthetic-tiny learns: well above chance, and complete rows beat single-modality rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmbench.config import resolve
from mmbench.protocols import MissingSpec
from mmbench.registry import METHODS
from mmbench.runner import execute


def test_late_fusion_learns_on_synthetic_tiny(tmp_path: Path) -> None:
    spec = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0)
    rec, _ = execute(spec, tmp_path)
    assert rec.status == "ok"
    test = rec.metrics.test
    by = rec.metrics.test_by_pattern
    chance = 1 / 8
    assert test["accuracy"] > 3 * chance, test
    assert by["complete"]["accuracy"] > max(by["image_only"]["accuracy"], by["tabular_only"]["accuracy"]), by
    for pattern, ceiling in rec.ceiling.items():  # nothing beats the Bayes ceiling by more than noise
        assert by[pattern]["accuracy"] <= ceiling + 0.2
    # early stopping restored the best validation epoch
    best = rec.curves[rec.best_epoch - 1]["val"]["accuracy"]
    assert best == max(c["val"]["accuracy"] for c in rec.curves)
    assert rec.metrics.val["accuracy"] == best


#: Budgets above the card's 8 epochs. IF-MMIN splits the fair budget between its stages (3 + 5 epochs
#: here), too few for its stage-1 classifier and its student to learn: seed 0 reaches test accuracy
#: 0.18 with 8 epochs, 0.25 with 16, 0.325 with 24 (its published split, 20 + 40, gave it 60).
BUDGET = {"ifmmin": 24}


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_learns_well_above_chance(name: str, tmp_path: Path) -> None:
    """Each registered method, with its YAML defaults, on synthetic-tiny under both at eta = 0.5."""
    overrides = {"train.epochs": BUDGET[name]} if name in BUDGET else None
    spec = resolve(name, "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides=overrides)
    rec, _ = execute(spec, tmp_path)
    assert rec.status == "ok", rec.error
    assert rec.metrics.test["accuracy"] > 2 / 8, rec.metrics.test  # chance is 1/8

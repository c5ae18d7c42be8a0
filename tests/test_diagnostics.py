"""mmbench.diagnostics: per-term gradient norms and variance ratios by hand, the probe schedule, and the
record of a real run (``record["diagnostics"]``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mmbench.config import resolve
from mmbench.diagnostics import (
    TrainingDiagnostics,
    default_epochs,
    dominance,
    term_grad_norms,
    variance_ratio,
)
from mmbench.protocols import MissingSpec
from mmbench.runner import execute


def test_variance_ratio_by_hand():
    # two rows [1, 0] and [3, 0]: mean [2, 0], population variance [1, 0] -> 1 / 4
    assert variance_ratio(torch.tensor([[1.0, 0.0], [3.0, 0.0]])) == pytest.approx(0.25)
    assert variance_ratio(torch.tensor([[2.0, 5.0]] * 4)) == 0.0  # the same vector for every sample
    assert math.isnan(variance_ratio(torch.ones(1, 3)))
    # N x K x D: per slot, then the mean over slots: slot 0 as above (1/4), slot 1 constant (0)
    x = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[3.0, 0.0], [1.0, 1.0]]])
    assert variance_ratio(x) == pytest.approx(0.125)


def test_term_grad_norms_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    unused = torch.nn.Parameter(torch.ones(3))
    terms = {"task": w @ torch.tensor([3.0, 4.0]),  # gradient [3, 4] -> 5
             "aux": w.pow(2).sum(),                  # gradient 2 w = [2, 0] -> 2
             "const": torch.tensor(0.7)}             # depends on no parameter
    norms = term_grad_norms(terms, [w, unused])
    assert norms["task"] == pytest.approx(5.0) and norms["aux"] == pytest.approx(2.0)
    assert norms["const"] == 0.0
    assert norms["total"] == pytest.approx(math.sqrt(5.0**2 + 4.0**2))  # [5, 4]
    sum(terms.values()).backward()  # the graph is still there for the training step
    assert torch.equal(w.grad, torch.tensor([5.0, 4.0]))


def test_dominance():
    assert dominance({"task": 2.0, "a": 6.0, "b": 1.0, "total": 9.0}) == ("a", 3.0)
    assert dominance({"arcface": 1.0, "a": 2.0}) == (None, None)  # no task term to compare with
    assert dominance({"task": 1.0, "total": 1.0}) == (None, None)


def test_default_probe_epochs():
    assert [e for e in range(20) if default_epochs(e)] == [0, 1, 2, 4, 8, 16]
    diag = TrainingDiagnostics()
    assert diag.wants(0, 0) and diag.wants(4, 0) and not diag.wants(3, 0) and not diag.wants(0, 1)


def test_run_record_has_gradient_probes(tmp_path: Path):
    """Every method's record carries per-term gradient norms at the first step of epochs 1, 2, 3, 5."""
    spec = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0,
                   overrides={"train.epochs": 5, "train.patience": 5})
    rec, _ = execute(spec, tmp_path)
    assert rec.status == "ok", rec.error
    probes = rec.diagnostics["probes"]
    assert [p["epoch"] for p in probes] == [1, 2, 3, 5]
    first = probes[0]
    assert first["step"] == 0 and set(first["loss"]) <= set(first["grad_norm"])
    assert first["grad_norm"]["task"] > 0 and first["grad_norm"]["total"] > 0
    assert rec.diagnostics["val"] == {}  # late fusion reports no method diagnostics

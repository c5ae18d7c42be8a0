"""The CI regression gate guards every method: ``ci-smoke`` lists them all, and a deliberately broken
method (its task loss's sign flipped) fails ``mmbench check`` against the committed reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmbench.config import load_protocol
from mmbench.executors import Hooks, RunContext, SequentialExecutor
from mmbench.losses import task_loss
from mmbench.models.late_fusion import LateFusion
from mmbench.plan import GridRequest, build_plan
from mmbench.records import load_records
from mmbench.registry import METHODS
from mmbench.report.check import compare, read_reference

REFERENCE = Path(__file__).parent.parent / "results" / "reference" / "ci-smoke.csv"
#: the tolerance .ci/run gives `mmbench check` (a floor under 3 standard errors)
TOLERANCE, K_SE = 0.04, 3.0


def test_the_gate_runs_every_registered_method_and_the_compositions() -> None:
    proto = load_protocol("ci-smoke")
    impls = {m.split("+")[0] for m in proto.methods}
    assert set(METHODS.names()) <= impls, f"add {sorted(set(METHODS.names()) - impls)} to protocols/ci-smoke.yaml"
    assert {"late_fusion+dpl", "late_fusion+mce"} <= set(proto.methods) and len(proto.seeds) >= 2
    ref = read_reference(REFERENCE)
    assert set(ref["method"]) == set(proto.methods) and set(ref["dataset"]) == set(proto.datasets)
    assert (ref["n"] >= 2).all()


def _gate(tmp_path: Path) -> list:
    plan = build_plan(GridRequest(protocol="ci-smoke", methods=["late_fusion"]))
    SequentialExecutor().run(plan, RunContext(tmp_path), Hooks())
    ref = read_reference(REFERENCE)
    return compare(load_records(tmp_path).records, ref[ref["method"] == "late_fusion"].reset_index(drop=True),
                   TOLERANCE, K_SE)


def test_a_method_with_its_loss_sign_flipped_fails_the_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(r.status == "ok" for r in _gate(tmp_path / "intact"))  # the control: the shipped code passes
    monkeypatch.setattr(LateFusion, "losses", lambda self, batch, out: {"task": -task_loss(out.logits, batch.y,
                                                                                           self.task)})
    rows = _gate(tmp_path / "broken")
    assert rows and all(r.status == "regressed" for r in rows), [(r.cell, r.delta, r.allowed) for r in rows]

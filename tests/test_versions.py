"""Code versions: every component's ``version`` is part of the run id, a resume re-runs records made by
an older version and says so, and a change to a component's code cannot slip by without a decision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmbench.config import resolve
from mmbench.plan import Plan, plan_status
from mmbench.protocols import MissingSpec
from mmbench.registry import DATASETS, METHODS
from mmbench.runner import execute
from tests.pin_versions import PIN_FILE, REGISTRIES, current

CELL = MissingSpec("both", 0.5)
FAST = {"train.epochs": 1, "data.n_samples": 60}


@pytest.mark.parametrize("kind, name", [(k, n) for k, reg in REGISTRIES.items() for n in reg.names()])
def test_the_code_a_version_covers_is_pinned(kind: str, name: str) -> None:
    """Fails when a component's code (docstrings and comments aside) or its ``version`` changed since the
    pin: decide whether the change alters what it computes, bump ``version`` if so, then re-pin with
    ``python -m tests.pin_versions``."""
    pinned = json.loads(PIN_FILE.read_text())
    now = current()[f"{kind}:{name}"]
    was = pinned.get(f"{kind}:{name}")
    assert was is not None, f"{kind} {name!r} is not pinned: run `python -m tests.pin_versions`"
    assert now["version"] == was["version"], (
        f"{kind} {name!r}: version {was['version']} -> {now['version']}; re-pin with `python -m tests.pin_versions`")
    assert now["code"] == was["code"], (
        f"{kind} {name!r}: its code ({', '.join(now['files'])}) changed since version {now['version']} was pinned. "
        "If the change alters what it computes, bump its `version` (older records are then re-run); either way "
        "re-pin with `python -m tests.pin_versions`")


@pytest.mark.parametrize("registry, name", [(METHODS, "late_fusion"), (METHODS, "dfpl"), (DATASETS, "synthetic")])
def test_a_version_bump_changes_the_run_id(registry, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = resolve("dfpl" if name == "dfpl" else "late_fusion", "synthetic-tiny", CELL, 0)
    monkeypatch.setattr(registry.get(name), "version", registry.version(name) + 1)
    after = resolve("dfpl" if name == "dfpl" else "late_fusion", "synthetic-tiny", CELL, 0)
    assert after.run_id != before.run_id and after.training_id != before.training_id


def test_a_resume_reruns_records_of_an_older_version_and_says_so(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    old = resolve("late_fusion", "synthetic-tiny", CELL, 0, overrides=FAST)
    execute(old, tmp_path)
    assert plan_status(Plan([old]), tmp_path, force=False).done == [True]
    monkeypatch.setattr(METHODS.get("late_fusion"), "version", METHODS.version("late_fusion") + 1)
    new = resolve("late_fusion", "synthetic-tiny", CELL, 0, overrides=FAST)
    status = plan_status(Plan([new]), tmp_path, force=False)
    assert status.done == [False]
    assert "late_fusion v1 -> v2" in status.superseded[0]
    rec, skipped = execute(new, tmp_path)
    assert not skipped and rec.spec["method"]["version"] == 2

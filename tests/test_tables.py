"""Tables are pure functions of records: mean ± std over seeds, best per row marked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmbench.errors import MMBenchError
from mmbench.records import RunRecord, parse_record
from mmbench.report.tables import render, summarize

FIXTURES = Path(__file__).parent / "fixtures" / "historic_results" / "v1-early"


def _with(r: RunRecord, method: str | None = None, shift: float = 0.0, **spec_changes: object) -> RunRecord:
    """A copy of ``r`` under another method label, ``shift`` added to its test accuracy, and
    ``spec_changes`` (``"train.epochs": 3``) applied to its spec."""
    data = json.loads(r.model_dump_json())
    if method:
        data["labels"]["method"] = method
    data["metrics"]["test"]["accuracy"] += shift
    for path, value in spec_changes.items():
        node = data["spec"]
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return parse_record(data, "test")


def _records() -> list[RunRecord]:
    base = [parse_record(json.loads(p.read_text()), p) for p in sorted(FIXTURES.glob("*.json"))]
    return [_with(r, method, shift) for method, shift in (("late_fusion", 0.0), ("better", 0.1)) for r in base]


def test_summary_means_and_stds() -> None:
    recs = _records()
    s = summarize(recs)
    accs = sorted(r.metrics.test["accuracy"] for r in recs if r.labels.method == "late_fusion")
    row = s[s["method"] == "late_fusion"].iloc[0]
    mean = sum(accs) / 2
    assert row["mean"] == pytest.approx(mean)
    assert row["std"] == pytest.approx(((accs[0] - mean) ** 2 + (accs[1] - mean) ** 2) ** 0.5)  # ddof=1, n=2
    assert row["n"] == 2


def test_markdown_marks_best_and_lists_baseline_first() -> None:
    md = render(_records(), "md")
    header = [line for line in md.splitlines() if line.startswith("| Dataset")][0]
    assert header.index("late_fusion") < header.index("better")
    row = [line for line in md.splitlines() if line.startswith("| synthetic-tiny")][0]
    assert row.count("**") == 2 and "**58.75" in row  # 48.75 + 10 points, bold


def test_latex_and_html() -> None:
    assert "\\textbf{58.75" in render(_records(), "latex")
    assert "<b>58.75" in render(_records(), "html")
    with pytest.raises(MMBenchError, match="unknown table format"):
        render(_records(), "xlsx")


def test_failed_runs_are_excluded() -> None:
    recs = [r.model_copy(update={"status": "failed"}) for r in _records()]
    with pytest.raises(MMBenchError, match="no finished runs"):
        summarize(recs)


def test_runs_that_differ_in_more_than_the_seed_are_never_pooled() -> None:
    """Two seeds at train.epochs=8 and one at train.epochs=3 of the same method and cell: two rows of the
    table, each labelled with the setting that differs, never one mean over all three."""
    a, b = [parse_record(json.loads(p.read_text()), p) for p in sorted(FIXTURES.glob("*.json"))]
    other = _with(a, shift=0.2, **{"train.epochs": 3})
    s = summarize([a, b, other])
    assert sorted(s["method"]) == ["late_fusion [train.epochs=3]", "late_fusion [train.epochs=8]"]
    assert s.set_index("method").loc["late_fusion [train.epochs=8]", "n"] == 2
    assert s.set_index("method").loc["late_fusion [train.epochs=3]", "n"] == 1
    code_change = _with(b, **{"method.version": 2})
    assert "method.version=2" in " ".join(summarize([a, code_change])["method"])

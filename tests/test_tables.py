"""Tables are pure functions of records: mean ± std over seeds, best per row marked."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mmbench.errors import MMBenchError
from mmbench.report.tables import render, summarize

FIXTURES = Path(__file__).parent / "fixtures" / "historic_results"


def _records() -> list[dict]:
    base = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    out = []
    for method, shift in (("late_fusion", 0.0), ("better", 0.1)):
        for r in base:
            r = copy.deepcopy(r)
            r["labels"]["method"] = method
            r["metrics"]["test"]["accuracy"] += shift
            out.append(r)
    return out


def test_summary_means_and_stds() -> None:
    recs = _records()
    s = summarize(recs)
    accs = sorted(r["metrics"]["test"]["accuracy"] for r in recs if r["labels"]["method"] == "late_fusion")
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
    recs = _records()
    for r in recs:
        r["status"] = "failed"
    with pytest.raises(MMBenchError, match="no finished runs"):
        summarize(recs)

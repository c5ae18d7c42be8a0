"""Comparison tables like DFPL Table I: rows = missingness cells, columns = methods, mean ± std over seeds.

* ``csv``: tidy long format (one row per dataset x cell x method with mean, std, n) - the format
  ``mmbench check`` reads as a reference.
* ``md`` / ``latex`` / ``html``: the pivoted paper table with availability columns; the best
  method per row is bold.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..errors import MMBenchError
from ..records import RunRecord
from .frame import CELL_KEYS, records_frame

BASELINE_FIRST = ("late_fusion",)


def summarize(records: list[RunRecord], metric: str | None = None) -> pd.DataFrame:
    """Mean, std and seed count per (cell, method) of the test metric (percent for bounded metrics)."""
    df = records_frame(records, metric)
    df = df[df["status"] == "ok"]
    if df.empty:
        raise MMBenchError("no finished runs to tabulate")
    agg = (df.groupby(CELL_KEYS + ["method", "metric"], dropna=False)["value"]
             .agg(mean="mean", std=lambda s: float(s.std(ddof=1)) if s.count() > 1 else 0.0, n="count")
             .reset_index())
    return agg.sort_values(CELL_KEYS + ["method"]).reset_index(drop=True)


def _method_order(methods: list[str]) -> list[str]:
    first = [m for m in BASELINE_FIRST if m in methods]
    return first + sorted(m for m in methods if m not in first)


def _fmt(mean: float, std: float, n: int, scale: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean * scale:.2f} ± {std * scale:.2f}" if n > 1 else f"{mean * scale:.2f}"


def pivot(summary: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """Paper-style table: one row per dataset x cell, availability columns, one column per method."""
    scale = 100.0
    methods = _method_order(sorted(summary["method"].unique()))
    rows = []
    for keys, grp in summary.groupby(CELL_KEYS, dropna=False, sort=True):
        cell = dict(zip(CELL_KEYS, keys, strict=True))
        avail = dict(part.rsplit(" ", 1) for part in str(cell["availability"]).split(" / "))
        row: dict[str, Any] = {"Dataset": cell["dataset"], "Image": avail.get("Image", ""),
                               "Tabular": avail.get("Tabular", "")}
        if cell["test_availability"] != cell["availability"]:
            row["Test"] = cell["test_availability"]
        best = grp["mean"].max()
        for m in methods:
            hit = grp[grp["method"] == m]
            if hit.empty:
                row[m] = "–"
                continue
            r = hit.iloc[0]
            text = _fmt(r["mean"], r["std"], int(r["n"]), scale)
            if r["mean"] == best and len(grp) > 1:
                text = {"md": f"**{text}**", "latex": f"\\textbf{{{text}}}", "html": f"<b>{text}</b>"}.get(fmt, text)
            row[m] = text
        rows.append(row)
    out = pd.DataFrame(rows)
    if "Test" in out.columns:
        out["Test"] = out["Test"].fillna("")
    return out


def render(records: list[RunRecord], fmt: str = "md", metric: str | None = None) -> str:
    """The comparison table of ``records`` as text in ``fmt`` (md, csv, latex, html)."""
    summary = summarize(records, metric)
    if fmt == "csv":
        return summary.to_csv(index=False, float_format="%.6f")
    table = pivot(summary, fmt)
    metric_name = metric or ", ".join(sorted(summary["metric"].unique()))
    if fmt == "md":
        caption = f"Test {metric_name} (%), mean ± std over seeds; best per row in bold."
        return caption + "\n\n" + table.to_markdown(index=False) + "\n"
    if fmt == "latex":
        body = table.to_latex(index=False, escape=False, column_format="l" * len(table.columns))
        return f"% Test {metric_name} (%), mean ± std over seeds; best per row in bold.\n{body}"
    if fmt == "html":
        return table.to_html(index=False, escape=False)
    raise MMBenchError(f"unknown table format {fmt!r}; expected md, csv, latex or html")

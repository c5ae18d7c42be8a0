"""Cost next to accuracy and calibration: one row per dataset x method (``mmbench table --view costs``).

Columns: the runs pooled, the test metric (default: the primary metric) and, unless it is one of them,
``ece`` and ``brier``, each the mean over cells of the seed means (every cell weighs the same); the
parameter count; the training step time (ms per optimiser step, mean ± std over runs); the peak memory
(the largest over runs) and the mean training time per run. The peak memory is what the run recorded:
``torch.cuda.max_memory_allocated`` on a GPU, but on a CPU the process's peak resident set size,
which includes the data and every earlier run of the same worker process - compare CPU values only
between runs made one per process. The device is named per row.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..errors import MMBenchError
from ..records import RunRecord
from .frame import CELL_KEYS, records_frame
from .tables import _method_order, _text, display, latex_table

CALIBRATION = ("ece", "brier")


def _metric_columns(records: list[RunRecord], metric: str | None) -> list[str]:
    primary = metric or ", ".join(sorted({r.primary_metric for r in records}))
    if "," in primary:
        raise MMBenchError(f"the datasets have different primary metrics ({primary}); pass --metric")
    return [primary] + [m for m in CALIBRATION if m != primary]


def cost_summary(records: list[RunRecord], metric: str | None = None) -> pd.DataFrame:
    """Per dataset x method: ``runs``, ``cells``, each metric's mean over cells (in the metric's units),
    ``parameters`` (median over runs), ``step_ms`` and ``step_ms_std``, ``peak_memory_mb`` (max),
    ``train_seconds`` (mean) and ``device``."""
    ok = [r for r in records if r.ok]
    if not ok:
        raise MMBenchError("no finished runs to tabulate")
    metrics = _metric_columns(ok, metric)
    frames = {m: records_frame(ok, m) for m in metrics}
    base = frames[metrics[0]]
    base["device"] = [r.env.get("device") or "?" for r in ok]
    rows = []
    for (dataset, method), g in base.groupby(["dataset", "method"], sort=True):
        row: dict[str, Any] = {"dataset": dataset, "method": method, "runs": len(g),
                               "cells": g.groupby(CELL_KEYS, dropna=False).ngroups}
        for m in metrics:
            f = frames[m].loc[g.index]
            vals = pd.to_numeric(f["value"], errors="coerce")
            cell_means = vals.groupby([f[k].astype(str) for k in CELL_KEYS]).mean()
            row[m] = float(cell_means.mean()) if cell_means.notna().any() else math.nan
        step = pd.to_numeric(g["step_ms"], errors="coerce")
        row["parameters"] = pd.to_numeric(g["parameters"], errors="coerce").median()
        row["step_ms"] = step.mean()
        row["step_ms_std"] = step.std(ddof=1) if step.count() > 1 else 0.0
        row["peak_memory_mb"] = pd.to_numeric(g["peak_memory_mb"], errors="coerce").max()
        row["train_seconds"] = pd.to_numeric(g["train_seconds"], errors="coerce").mean()
        row["device"] = ", ".join(sorted(set(g["device"])))
        rows.append(row)
    out = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(_method_order(sorted(out["method"].unique())))}
    out = out.sort_values(["dataset", "method"], key=lambda s: s.map(order) if s.name == "method" else s)
    out.attrs["metrics"] = metrics
    return out.reset_index(drop=True)


def _params(n: float, dash: str = "–") -> str:
    if n != n:
        return dash
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)}"


def _num(v: float, digits: int, dash: str = "–") -> str:
    return dash if v != v else f"{v:.{digits}f}"


def render_costs(records: list[RunRecord], fmt: str = "md", metric: str | None = None) -> str:
    """The costs table (see the module docstring) in ``fmt`` (md, csv, latex, html)."""
    if fmt not in ("md", "csv", "latex", "html"):
        raise MMBenchError(f"unknown table format {fmt!r}; expected md, csv, latex or html")
    if fmt == "csv":
        return cost_summary(records, metric).to_csv(index=False, float_format="%.6f")
    table, cap = costs_table(records, fmt, metric)
    if fmt == "md":
        align = ["left" if c in ("Dataset", "Method", "Device") else "right" for c in table.columns]
        return cap + "\n\n" + table.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"
    if fmt == "latex":
        return latex_table(table, cap, "tab:mmbench-costs", text_columns=("Dataset", "Method", "Device"))
    return table.to_html(index=False, escape=False)


def costs_table(records: list[RunRecord], fmt: str = "html", metric: str | None = None) -> tuple[pd.DataFrame, str]:
    """The costs table as a frame with cells ready for ``fmt`` (md, latex, html), and its caption."""
    s = cost_summary(records, metric)
    metrics = s.attrs["metrics"]
    dash = "--" if fmt == "latex" else "–"
    pm = " $\\pm$ " if fmt == "latex" else " ± "
    heads = {m: {"ece": "ECE (%)", "brier": "Brier"}.get(m, f"{m} ({display(m).unit or 'score'})") for m in metrics}
    cols: dict[str, list[str]] = {"Dataset": [], "Method": [], "Runs": [], **{heads[m]: [] for m in metrics},
                                  "Parameters": [], "Step (ms)": [], "Peak mem. (MB)": [], "Train (s/run)": [],
                                  "Device": []}
    for r in s.itertuples(index=False):
        cols["Dataset"].append(_text(r.dataset, fmt))
        cols["Method"].append(_text(r.method, fmt))
        cols["Runs"].append(f"{r.runs} ({r.cells} cells)")
        for m in metrics:
            v = getattr(r, m)
            cols[heads[m]].append(dash if v != v else display(m).number(v))
        cols["Parameters"].append(_params(r.parameters, dash))
        cols["Step (ms)"].append(_num(r.step_ms, 1, dash) + ("" if r.runs < 2 else pm + _num(r.step_ms_std, 1, dash)))
        cols["Peak mem. (MB)"].append(_num(r.peak_memory_mb, 0, dash))
        cols["Train (s/run)"].append(_num(r.train_seconds, 1, dash))
        cols["Device"].append(_text(r.device, fmt))
    lower = [m for m in metrics if not display(m).higher_is_better]
    lower_text = "; lower is better: " + ", ".join(lower) if lower else ""
    cap = (f"Cost next to test {', '.join(metrics)} (each the mean over cells of the seed means; percent, the "
           f"Brier score raw{lower_text}). Parameters: all (trainable and frozen), median over runs; step: training "
           "time per optimiser step, mean ± std over runs; peak memory: the largest over runs (GPU: CUDA max "
           "allocated; CPU: the process's peak resident set, including data and earlier runs of the same process); "
           "train: training seconds per run.")
    return pd.DataFrame(cols), cap

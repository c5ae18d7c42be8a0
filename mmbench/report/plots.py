"""Figures built only from run records (matplotlib object API with the Agg canvas; no pyplot state).

* ``curve``: test metric vs missing rate, one line per method, mean ± std band over seeds
  (test-sweep grids: against the test rate per train cell; DFPL-Table-I grids: against the
  train = test rate per scenario; see :func:`mmbench.report.stats.curve_points`).
* ``patterns``: per-pattern bars (complete / image-only / tabular-only), mean ± std over seeds, with
  the dataset's Bayes ceiling as a black marker where records carry one (accuracy only).
* ``seeds``: box plot over seeds per method with every seed drawn as a point, one panel per cell.

Each figure is written as PNG and PDF (same stem), atomically, with no timestamp in the PDF.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..core import PATTERNS
from ..errors import MMBenchError
from ..records import RunRecord, atomic_write_bytes
from .stats import curve_points, seed_frame
from .tables import BASELINE_FIRST, CELL_KEYS

MAX_PANELS = 36
PATTERN_LABELS = {"complete": "complete", "image_only": "image\nonly", "tabular_only": "tabular\nonly"}
SCALE = 100.0  # every metric of mmbench.metrics.METRICS is a fraction; figures show percent


def method_order(methods: list[str] | set[str]) -> list[str]:
    """Baselines first, then alphabetical (the order of the tables)."""
    ms = set(methods)
    first = [m for m in BASELINE_FIRST if m in ms]
    return first + sorted(ms - set(first))


def method_colors(methods: list[str]) -> dict[str, Any]:
    """A stable color per method (tab10, or tab20 beyond ten methods)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def save_figure(fig: Figure, out: str | Path) -> list[Path]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` (``out`` with or without either suffix),
    atomically."""
    out = Path(out)
    base = out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out
    paths = []
    FigureCanvasAgg(fig)
    for fmt, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, metadata=meta)
        path = base.parent / f"{base.name}.{fmt}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def _grid(n: int, width: float = 4.4, height: float = 3.3) -> tuple[Figure, list[Any]]:
    if n > MAX_PANELS:
        raise MMBenchError(f"{n} panels to draw (at most {MAX_PANELS}); narrow the records with --dataset, "
                           "--method, --scenario, --rate or --test-rate")
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _metric_label(df: pd.DataFrame) -> str:
    return "test " + ", ".join(sorted(df["metric"].dropna().unique())) + " (%)"


def _cell_title(keys: dict[str, Any]) -> str:
    if keys["test_availability"] == keys["availability"]:
        return f"{keys['dataset']}\n{keys['availability']}"
    return f"{keys['dataset']}\ntrain {keys['availability']}\ntest {keys['test_availability']}"


def _legend(fig: Figure, handles: list[Any]) -> None:
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize="small")


def plot_curves(records: list[RunRecord], out: str | Path, metric: str | None = None,
                x: str = "auto") -> list[Path]:
    """Metric vs missing rate, one line per method, mean ± std over seeds; one panel per curve group."""
    pts, axis = curve_points(records, metric, x)
    methods = method_order(pts["method"].unique())
    colors = method_colors(methods)
    groups = list(pts.groupby("group", sort=True))
    fig, axes = _grid(len(groups))
    for ax, (g, grp) in zip(axes, groups, strict=True):
        for m in methods:
            sub = grp[grp["method"] == m]
            if sub.empty:
                continue
            agg = sub.groupby("x")["value"].agg(["mean", "std", "count"]).reset_index()
            std = agg["std"].where(agg["count"] > 1, 0.0).fillna(0.0)
            xs, mean = agg["x"].to_numpy(), SCALE * agg["mean"].to_numpy()
            ax.plot(xs, mean, marker="o", ms=3.5, lw=1.5, color=colors[m])
            ax.fill_between(xs, mean - SCALE * std.to_numpy(), mean + SCALE * std.to_numpy(), color=colors[m],
                            alpha=0.18, lw=0)
        ax.set_title(g, fontsize="medium")
        ax.set_xlabel("test missing rate" if axis == "test_rate" else "missing rate (train = val = test)")
        ax.set_ylabel(_metric_label(grp))
        ax.grid(alpha=0.3)
    n_seeds = pts.groupby(["group", "method", "x"])["seed"].nunique()
    handles = [Line2D([], [], color=colors[m], marker="o", ms=3.5, label=m) for m in methods]
    _legend(fig, handles)
    fig.suptitle(f"mean ± std over seeds (n = {_span(n_seeds)})", fontsize="small")
    return save_figure(fig, out)


def _span(counts: pd.Series) -> str:
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def _cells(df: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    groups = df.groupby(CELL_KEYS, dropna=False, sort=True)
    return [(dict(zip(CELL_KEYS, keys, strict=True)), grp) for keys, grp in groups]


def plot_patterns(records: list[RunRecord], out: str | Path, metric: str | None = None) -> list[Path]:
    """Per-pattern bars per method (mean ± std over seeds), the Bayes ceiling as a marker; one panel
    per cell."""
    df = seed_frame(records, metric)
    patterns = list(PATTERNS)
    for p in patterns:
        df[f"value_{p}"] = pd.to_numeric(df[f"value_{p}"], errors="coerce")
        df[f"ceiling_{p}"] = pd.to_numeric(df[f"ceiling_{p}"], errors="coerce")
    methods = method_order(df["method"].unique())
    colors = method_colors(methods)
    cells = _cells(df)
    fig, axes = _grid(len(cells), width=max(3.6, 1.2 + 0.35 * len(methods) * len(patterns)))
    width = 0.8 / len(methods)
    has_ceiling = False
    for ax, (keys, grp) in zip(axes, cells, strict=True):
        for j, m in enumerate(methods):
            sub = grp[grp["method"] == m]
            if sub.empty:
                continue
            vals = sub[[f"value_{p}" for p in patterns]]
            mean = vals.mean(axis=0).to_numpy()
            std = vals.std(axis=0, ddof=1).fillna(0.0).to_numpy() if len(sub) > 1 else np.zeros(len(patterns))
            xs = np.arange(len(patterns)) - 0.4 + width * (j + 0.5)
            ax.bar(xs, SCALE * mean, width, yerr=SCALE * std, color=colors[m], capsize=2,
                   error_kw={"lw": 0.8})
        for i, p in enumerate(patterns):
            c = grp[f"ceiling_{p}"].dropna()
            if len(c) and grp[f"value_{p}"].notna().any():  # only where the pattern has test rows
                has_ceiling = True
                ax.hlines(SCALE * float(c.mean()), i - 0.45, i + 0.45, colors="black", lw=2.0)
        ax.set_xticks(range(len(patterns)), [PATTERN_LABELS[p] for p in patterns])
        ax.set_title(_cell_title(keys), fontsize="medium")
        ax.set_ylabel(_metric_label(grp))
        ax.grid(axis="y", alpha=0.3)
    handles: list[Any] = [Line2D([], [], color=colors[m], lw=6, label=m) for m in methods]
    if has_ceiling:
        handles.append(Line2D([], [], color="black", lw=2.0, label="Bayes ceiling"))
    _legend(fig, handles)
    n_seeds = df.groupby([*CELL_KEYS, "method"], dropna=False)["seed"].nunique()
    fig.suptitle(f"mean ± std over seeds (n = {_span(n_seeds)})", fontsize="small")
    return save_figure(fig, out)


def plot_seeds(records: list[RunRecord], out: str | Path, metric: str | None = None) -> list[Path]:
    """Box plot over seeds per method with each seed as a point; one panel per cell."""
    df = seed_frame(records, metric).dropna(subset=["value"])
    if df.empty:
        raise MMBenchError("no run has a value of the requested metric")
    methods = method_order(df["method"].unique())
    colors = method_colors(methods)
    cells = _cells(df)
    fig, axes = _grid(len(cells), width=1.5 + 0.6 * len(methods))
    rng = np.random.default_rng(0)
    for ax, (keys, grp) in zip(axes, cells, strict=True):
        present = [m for m in methods if (grp["method"] == m).any()]
        data = [SCALE * grp.loc[grp["method"] == m, "value"].to_numpy() for m in present]
        ax.boxplot(data, positions=range(1, len(present) + 1), widths=0.55, showfliers=False,
                   medianprops={"color": "black"})
        for i, (m, vals) in enumerate(zip(present, data, strict=True), start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, size=len(vals)), vals, s=16, color=colors[m], zorder=3,
                       edgecolors="white", linewidths=0.4)
        ax.set_xticks(range(1, len(present) + 1), present, rotation=30, ha="right")
        ax.set_title(_cell_title(keys), fontsize="medium")
        ax.set_ylabel(_metric_label(grp))
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out)


PLOTS: dict[str, Callable[..., list[Path]]] = {
    "curve": plot_curves, "patterns": plot_patterns, "seeds": plot_seeds}

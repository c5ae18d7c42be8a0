"""Figures built only from run records (matplotlib object API with the Agg canvas; no pyplot state).

* ``curve``: test metric vs missing rate, one line per method, mean ± std band over seeds
  (test-sweep grids: against the test rate per train cell; DFPL-Table-I grids: against the
  train = test rate per scenario; see :func:`mmbench.report.stats.curve_points`).
* ``patterns``: per-pattern bars (complete / image-only / tabular-only), mean ± std over seeds, with
  the dataset's Bayes ceiling as a black marker where records carry one (accuracy only).
* ``seeds``: box plot over seeds per method with every seed drawn as a point, one panel per cell.
* ``cd``: critical-difference diagram (Demšar 2006) of the average ranks over cells (seeds averaged
  within each cell), methods joined by a bar when the Holm-adjusted pairwise Wilcoxon test over cells
  does not separate them (drawn by scikit-posthocs: the ``report`` extra).
* ``heatmap``: train missing rate x test missing rate, mean over seeds, one panel per method
  (DFPL Fig. 3-4, DPL Fig. 6).
* ``attention``: DFPL's class-aware aggregation (CMA, Eq. 11) weights per true class over the six
  rows of H (Eq. 10), per missing pattern, from the saved predictions (DFPL Fig. 5).
* ``tsne``: t-SNE (scikit-learn) of the saved pooled per-modality test embeddings, coloured by class,
  per missing pattern (DFPL Fig. 6).

Values are drawn in the units of :func:`mmbench.report.tables.display` (percent; the Brier score raw).
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
from .stats import curve_points, friedman_summary, seed_frame
from .tables import BASELINE_FIRST, CELL_KEYS, display, metric_title

MAX_PANELS = 36
DPI = 150
PATTERN_LABELS = {"complete": "complete", "image_only": "image\nonly", "tabular_only": "tabular\nonly"}
PATTERN_TITLES = {"complete": "complete", "image_only": "image only", "tabular_only": "tabular only"}
#: the rows of DFPL's H (Eq. 10) in the order of ``DFPL._multiscale``: image-specific global and
#: prototype features, shared global and prototype features, tabular-specific global and prototype
CMA_ROWS = ("image spec.\nglobal", "image spec.\nprototype", "shared\nglobal", "shared\nprototype",
            "tabular spec.\nglobal", "tabular spec.\nprototype")


class MissingExtra(MMBenchError):
    """A figure needs an optional dependency that is not installed."""


def _scale(df: pd.DataFrame) -> float:
    """Display scale of the frame's metric (all rows of a figure share one unit)."""
    metrics = sorted(df["metric"].dropna().unique())
    scales = {display(str(m)).scale for m in metrics}
    if len(scales) > 1:
        raise MMBenchError(f"metrics {', '.join(metrics)} have different units; draw one at a time with --metric")
    return scales.pop() if scales else 100.0


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
        fig.savefig(buf, format=fmt, dpi=DPI, metadata=meta)
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
    return "test " + ", ".join(metric_title(str(m)).replace(" (Brier score, ", " (")
                               for m in sorted(df["metric"].dropna().unique()))


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
    scale = _scale(pts)
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
            xs, mean = agg["x"].to_numpy(), scale * agg["mean"].to_numpy()
            ax.plot(xs, mean, marker="o", ms=3.5, lw=1.5, color=colors[m])
            ax.fill_between(xs, mean - scale * std.to_numpy(), mean + scale * std.to_numpy(), color=colors[m],
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
    scale = _scale(df)
    patterns = list(PATTERNS)
    for p in patterns:
        df[f"value_{p}"] = pd.to_numeric(df[f"value_{p}"], errors="coerce")
        df[f"ceiling_{p}"] = pd.to_numeric(df[f"ceiling_{p}"], errors="coerce")
    if df[[f"value_{p}" for p in patterns]].isna().all().all():
        raise MMBenchError(f"no run has per-pattern values of {metric or 'its primary metric'}")
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
            ax.bar(xs, scale * mean, width, yerr=scale * std, color=colors[m], capsize=2,
                   error_kw={"lw": 0.8})
        for i, p in enumerate(patterns):
            c = grp[f"ceiling_{p}"].dropna()
            if len(c) and grp[f"value_{p}"].notna().any():  # only where the pattern has test rows
                has_ceiling = True
                ax.hlines(scale * float(c.mean()), i - 0.45, i + 0.45, colors="black", lw=2.0)
        ax.set_xticks(range(len(patterns)), [PATTERN_LABELS[p] for p in patterns])
        ax.set_title(_cell_title(keys), fontsize="medium")
        ax.set_ylabel(_metric_label(grp))
        ax.set_ylim(bottom=0)  # every metric is >= 0; a std bar may not suggest otherwise
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
    scale = _scale(df)
    methods = method_order(df["method"].unique())
    colors = method_colors(methods)
    cells = _cells(df)
    fig, axes = _grid(len(cells), width=1.5 + 0.6 * len(methods))
    rng = np.random.default_rng(0)
    for ax, (keys, grp) in zip(axes, cells, strict=True):
        present = [m for m in methods if (grp["method"] == m).any()]
        data = [scale * grp.loc[grp["method"] == m, "value"].to_numpy() for m in present]
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


# ------------------------------------------------------------------------------ critical difference


def plot_cd(records: list[RunRecord], out: str | Path, metric: str | None = None, alpha: float = 0.05) -> list[Path]:
    """Critical-difference diagram: average ranks over cells (seeds averaged within each cell; 1 = best)
    and bars joining the methods whose Holm-adjusted pairwise Wilcoxon test over cells has p >= alpha
    (:func:`mmbench.report.stats.friedman_summary`), drawn by ``scikit_posthocs.critical_difference_diagram``."""
    try:
        import scikit_posthocs as sp
    except ImportError as exc:
        if exc.name == "scikit_posthocs":  # not installed (not: installed but one of its imports fails)
            raise MissingExtra("the critical-difference diagram needs scikit-posthocs "
                               "(pip install 'mmbench[report]')") from None
        raise MissingExtra(f"scikit-posthocs is installed but does not import ({exc}); the critical-difference "
                           "diagram needs scikit-posthocs >= 0.17 (pip install -U 'mmbench[report]')") from None
    fr = friedman_summary(records, metric, alpha)
    methods = list(fr.ranks["method"])
    ranks = pd.Series(fr.ranks["avg_rank"].to_numpy(), index=methods)
    # the decision is made here (Holm p < alpha) and passed as p = 0 / 1, so that every scikit-posthocs
    # version (with or without its own alpha argument) joins the same methods
    sig = pd.DataFrame(1.0, index=methods, columns=methods)
    for r in fr.pairwise.itertuples():
        sig.loc[r.a, r.b] = sig.loc[r.b, r.a] = 0.0 if r.significant else 1.0
    colors = method_colors(method_order(methods))
    k = len(methods)
    fig = Figure(figsize=(7.0, 1.5 + 0.3 * (math.ceil(k / 2) + 1)), layout="constrained")
    ax = fig.add_subplot()
    sp.critical_difference_diagram(ranks, sig, ax=ax, color_palette=colors,
                                   label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
                                   label_props={"fontsize": "small"})
    ax.set_xlim(1, k)
    ax.set_xticks(range(1, k + 1))
    ax.tick_params(axis="x", labelsize="small")
    friedman = (f"Friedman p = {fr.p:.3g}" if fr.p == fr.p else "no Friedman test (needs >= 3 methods, >= 2 cells)")
    ax.set_title(f"Average rank of test {fr.metric or 'metric'} over {fr.n_blocks} cell(s), seeds averaged "
                 f"(1 = best); {friedman}\nbars join methods not significantly different (pairwise Wilcoxon "
                 f"over cells, Holm, alpha = {alpha:g})", fontsize="small", pad=14)
    return save_figure(fig, out)


# ------------------------------------------------------------------------------------- heatmap


def plot_heatmap(records: list[RunRecord], out: str | Path, metric: str | None = None) -> list[Path]:
    """Train missing rate (rows) x test missing rate (columns), mean over seeds, one panel per
    (dataset, scenario, method) with runs at several train and several test rates; one colour scale."""
    df = seed_frame(records, metric)
    df["train_f"] = pd.to_numeric(df["rate"], errors="coerce")
    df["test_f"] = pd.to_numeric(df["test_rate"], errors="coerce")
    df = df.dropna(subset=["train_f", "test_f", "value"])
    groups = [(k, g) for k, g in df.groupby(["dataset", "scenario", "method"], sort=True)
              if g["train_f"].nunique() > 1 and g["test_f"].nunique() > 1]
    if not groups:
        raise MMBenchError("no method has runs at several train and several test missing rates "
                           "(the heatmap needs a train x test sweep, e.g. rates and test_rates in a protocol)")
    scale = _scale(df)
    d = display(str(df["metric"].iloc[0]))
    order = {m: i for i, m in enumerate(method_order({k[2] for k, _ in groups}))}
    groups.sort(key=lambda kg: (kg[0][0], kg[0][1], order[kg[0][2]]))
    mats = []
    for _, g in groups:
        mats.append(g.groupby(["train_f", "test_f"])["value"].mean().unstack("test_f").sort_index() * scale)
    lo = min(float(np.nanmin(m.to_numpy())) for m in mats)
    hi = max(float(np.nanmax(m.to_numpy())) for m in mats)
    fig, axes = _grid(len(groups), width=3.7, height=3.4)
    cmap = "viridis" if d.higher_is_better else "viridis_r"
    im = None
    for k, (ax, ((dataset, scenario, method), g), mat) in enumerate(zip(axes, groups, mats, strict=True)):
        values = mat.to_numpy()
        im = ax.imshow(values, origin="lower", cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        mid = (lo + hi) / 2
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                if v == v:
                    dark = (v < mid) == d.higher_is_better
                    ax.text(j, i, f"{v:.{max(d.decimals - 1, 1)}f}", ha="center", va="center", fontsize="small",
                            color="white" if dark else "black")
        ax.set_xticks(range(values.shape[1]), [f"{100 * t:g}%" for t in mat.columns])
        ax.set_yticks(range(values.shape[0]), [f"{100 * t:g}%" for t in mat.index])
        ax.set_xlabel("test missing rate")
        if k % 3 == 0:
            ax.set_ylabel("train (= val) missing rate")
        n = g.groupby(["train_f", "test_f"])["seed"].nunique()
        ax.set_title(f"{method}\n{dataset} · {scenario} · n = {_span(n)} seed(s)", fontsize="medium")
    fig.colorbar(im, ax=axes, shrink=0.85, label=_metric_label(df) + ", mean over seeds")
    return save_figure(fig, out)


# ------------------------------------------------------------------------------ saved predictions


def _npz(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in (keys or z.files) if k in z.files}


def with_predictions(records: list[RunRecord], predictions: dict[str, Path], needs: str) -> pd.DataFrame:
    """Finished runs whose predictions file exists and holds an array whose name starts with ``needs``."""
    df = seed_frame(records)
    keep = []
    for rid in df["run_id"]:
        path = predictions.get(rid)
        ok = False
        if path is not None and path.is_file():
            with np.load(path) as z:
                ok = any(k.startswith(needs) for k in z.files)
        keep.append(ok)
    return df[keep]


def _group_label(method: str, keys: dict[str, Any]) -> str:
    cell = keys["availability"] if keys["test_availability"] == keys["availability"] else \
        f"{keys['availability']} -> test {keys['test_availability']}"
    return f"{method} · {keys['dataset']}\n{cell}"


def _ordered_groups(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """(cell keys + method, rows) groups, cells sorted, methods in table order within a cell."""
    order = {m: i for i, m in enumerate(method_order(df["method"].unique()))}
    groups = list(df.groupby([*CELL_KEYS, "method"], sort=True, dropna=False))
    return sorted(groups, key=lambda kg: (tuple(str(k) for k in kg[0][:-1]), order[kg[0][-1]]))


def _pattern_rows(present: np.ndarray, pattern: str) -> np.ndarray:
    return (present == np.array(PATTERNS[pattern], dtype=bool)).all(axis=1)


def class_attention(runs: list[dict[str, np.ndarray]], pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """``(classes x H rows mean, rows per class)``: for the test rows of ``pattern`` whose true class is c,
    pooled over ``runs`` (``aux_cma_attention``: rows x classes x H rows, ``y``, ``present``), the mean
    of ``attention[row, c, :]`` - the weights of the true class's query; NaN for a class without rows."""
    sums, counts = None, None
    for a in runs:
        attn, y = a["aux_cma_attention"], np.asarray(a["y"])
        if y.ndim != 1:
            raise MMBenchError("the attention figure is per true class: single-label tasks only")
        y = y.astype(int)
        rows = _pattern_rows(a["present"], pattern)
        s = np.zeros(attn.shape[1:], dtype=np.float64)
        np.add.at(s, y[rows], attn[rows, y[rows], :])
        n = np.bincount(y[rows], minlength=attn.shape[1]).astype(np.float64)
        sums, counts = (s, n) if sums is None else (sums + s, counts + n)
    if sums is None or counts is None:
        raise MMBenchError("no run to average attention over")
    mean = sums / np.maximum(counts, 1.0)[:, None]
    mean[counts == 0] = np.nan
    return mean, counts


def plot_attention(records: list[RunRecord], out: str | Path, predictions: dict[str, Path]) -> list[Path]:
    """DFPL's CMA attention (Eq. 11) per true class: for the test rows of class c, the mean weight the
    query of class c puts on each row of H (Eq. 10); pooled over seeds, one panel per (method, cell)
    and missing pattern. Rows of H a pattern cannot see get exactly zero weight and are drawn grey."""
    df = with_predictions(records, predictions, "aux_cma_attention")
    if df.empty:
        raise MMBenchError("no run has saved CMA attention weights (aux_cma_attention in its predictions .npz; "
                           "DFPL with fusion cma saves them)")
    groups = _ordered_groups(df)
    if len(groups) * len(PATTERNS) > MAX_PANELS:
        raise MMBenchError(f"{len(groups)} method x cell groups with attention weights (at most "
                           f"{MAX_PANELS // len(PATTERNS)}); narrow the records with --method, --rate or --test-rate")
    panels: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for keys, g in groups:
        arrays = [_npz(predictions[rid], ("aux_cma_attention", "y", "present")) for rid in g["run_id"]]
        label = _group_label(keys[-1], dict(zip(CELL_KEYS, keys[:-1], strict=True)))
        for p in PATTERNS:
            panels.append((label, p, *class_attention(arrays, p)))
    vmax = max([float(np.nanmax(m)) for _, _, m, _ in panels if np.isfinite(m).any()] or [1.0])
    n_rows = len(groups)
    n_c, n_h = panels[0][2].shape
    fig = Figure(figsize=(3 * 3.3 + 0.9, n_rows * (1.3 + 0.22 * n_c) + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, 3, squeeze=False)
    from matplotlib import colormaps

    cmap = colormaps["magma"].with_extremes(bad="0.85")
    im = None
    for k, (label, p, mean, counts) in enumerate(panels):
        ax = axes[k // 3][k % 3]
        shown = np.ma.masked_where(~(mean > 0), mean)  # exact zeros: rows of H the pattern does not have
        im = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
        for c in np.flatnonzero(counts == 0):
            ax.text((n_h - 1) / 2, c, "no test rows of this class", ha="center", va="center", fontsize="x-small",
                    color="0.3")
        names = CMA_ROWS if n_h == len(CMA_ROWS) else [f"row {j}" for j in range(n_h)]
        ax.set_xticks(range(n_h), names if k // 3 == n_rows - 1 else [""] * n_h, fontsize="x-small",
                      rotation=90)
        ax.set_yticks(range(n_c), [str(c) for c in range(n_c)] if k % 3 == 0 else [""] * n_c, fontsize="x-small")
        if k % 3 == 0:
            ax.set_ylabel(f"{label}\n\ntrue class", fontsize="small")
        ax.set_title(f"{PATTERN_TITLES[p]} (n = {int(counts.sum())} rows)", fontsize="small")
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight of the true class's query")
    fig.suptitle("CMA attention over the rows of H per true class (mean over test rows and seeds; "
                 "grey: a row of H the pattern does not have)", fontsize="small")
    return save_figure(fig, out)


def plot_tsne(records: list[RunRecord], out: str | Path, predictions: dict[str, Path],
              perplexity: float = 30.0) -> list[Path]:
    """t-SNE of the saved test embeddings (``emb_<modality>``: the first test rows' pooled per-modality
    embeddings), coloured by true class; one panel per (method, cell) and missing pattern, from the
    run with the lowest seed. A pattern's rows are embedded from the modalities they have (both
    embeddings concatenated for complete rows). The silhouette score of the classes in the original
    embedding space is given per panel."""
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    df = with_predictions(records, predictions, "emb_")
    if df.empty:
        raise MMBenchError("no run has saved embeddings (emb_<modality> in its predictions .npz; runs made before "
                           "embeddings were saved have none)")
    groups = _ordered_groups(df.sort_values("seed", kind="stable").groupby([*CELL_KEYS, "method"]).head(1))
    if len(groups) * len(PATTERNS) > MAX_PANELS:
        raise MMBenchError(f"{len(groups)} method x cell groups with embeddings (at most "
                           f"{MAX_PANELS // len(PATTERNS)}); narrow the records with --method, --rate or --test-rate")
    n_rows = len(groups)
    fig = Figure(figsize=(3 * 3.2 + 1.2, n_rows * 3.0 + 0.4), layout="constrained")
    axes = fig.subplots(n_rows, 3, squeeze=False)
    n_classes = 0
    from matplotlib import colormaps

    for r, (keys, g) in enumerate(groups):
        row = g.iloc[0]
        a = _npz(predictions[row["run_id"]])
        emb = {k[len("emb_"):]: v.astype(np.float32) for k, v in a.items() if k.startswith("emb_")}
        n = min(v.shape[0] for v in emb.values())
        y, present = a["y"][:n].astype(int), a["present"][:n]
        if y.ndim != 1:
            raise MMBenchError("the t-SNE figure colours rows by class: single-label tasks only")
        n_classes = max(n_classes, int(a["logits"].shape[1]))
        label = _group_label(keys[-1], dict(zip(CELL_KEYS, keys[:-1], strict=True)))
        for j, p in enumerate(PATTERNS):
            ax = axes[r][j]
            rows = _pattern_rows(present, p)
            mods = [m for m, on in zip(("image", "tabular"), PATTERNS[p], strict=True) if on and m in emb]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{label}\nseed {row['seed']}", fontsize="small")
            if rows.sum() < 10 or not mods:
                ax.set_title(f"{PATTERN_TITLES[p]}: {int(rows.sum())} rows, too few", fontsize="small")
                continue
            x = np.concatenate([emb[m][rows] for m in mods], axis=1)
            xy = TSNE(n_components=2, perplexity=min(perplexity, (rows.sum() - 1) / 3), init="pca",
                      random_state=0).fit_transform(x)
            cls = y[rows]
            sil = silhouette_score(x, cls) if 1 < len(np.unique(cls)) < len(cls) else math.nan
            cmap = colormaps["tab10" if n_classes <= 10 else "tab20"]
            ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(c % cmap.N) for c in cls], s=9, linewidths=0)
            ax.set_title(f"{PATTERN_TITLES[p]} ({' + '.join(mods)}), n = {int(rows.sum())}\n"
                         f"silhouette {sil:.2f}", fontsize="small")
    cmap = colormaps["tab10" if n_classes <= 10 else "tab20"]
    handles = [Line2D([], [], ls="", marker="o", ms=5, color=cmap(c % cmap.N), label=f"class {c}")
               for c in range(n_classes)]
    _legend(fig, handles)
    fig.suptitle("t-SNE of the pooled test embeddings per missing pattern (coloured by true class; silhouette "
                 "in the embedding space)", fontsize="small")
    return save_figure(fig, out)


PLOTS: dict[str, Callable[..., list[Path]]] = {
    "curve": plot_curves, "patterns": plot_patterns, "seeds": plot_seeds, "cd": plot_cd, "heatmap": plot_heatmap,
    "attention": plot_attention, "tsne": plot_tsne}

"""Significance statistics and robustness summaries, built only from run records.

* **Per cell, against the best method** (:func:`compare_to_best`, used by ``mmbench table --stats``):
  a two-sided Wilcoxon signed-rank test paired by training seed (default), a paired t-test by seed,
  or, on the same test rows from the saved ``<record>.npz`` predictions, a paired bootstrap or an exact
  McNemar test (these two measure test-sample noise only). p-values are Holm-adjusted within the row.
  Every comparison also gets its **minimum detectable difference** (80 % power, alpha 0.05, from the
  observed spread of the paired differences and the number of seeds; :mod:`mmbench.report.power`):
  a method whose gap to the best is below it is marked *tied* (the design cannot separate them).
  Runs are paired only when their test masks are identical (``record["masks"]["test"]["hash"]``).
  With n paired seeds the smallest exact two-sided Wilcoxon p is 2/2^n: fewer than 6 seeds can never
  reach p < 0.05 (:func:`min_wilcoxon_p`), so with 3 seeds every method is "not significantly different".
* **Across cells** (:func:`friedman_summary`, Demšar 2006; post-hoc after Benavoli et al. 2016):
  blocks are dataset x missingness cells with seeds averaged first (seeds of one cell are not
  independent problems); Friedman chi-square test, average ranks (1 = best), and pairwise Wilcoxon
  signed-rank tests over blocks with Holm's step-down adjustment.
* **Robustness summaries**: :func:`drop_summary` (metric minus the same method and
  seed at 0% missing) and :func:`auc_summary` (area under the metric vs missing-rate curve).

Direction: "best" is the highest mean, and rank 1 the highest value, except for the lower-is-better
metrics of :data:`mmbench.metrics.LOWER_IS_BETTER` (``ece``, ``brier``), where it is the lowest. A gap
to the best is always measured in the better direction (positive: worse than the best).
"""

from __future__ import annotations

import html
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..core import higher_is_better
from ..errors import MMBenchError
from ..records import RunRecord
from .frame import CELL_KEYS, records_frame
from .power import mcnemar_counts_p, mcnemar_p, mdd, paired_t_p, seeds_needed
from .tables import caption, display, latex_table, pivot, summarize

DAGGER = {"md": "†", "latex": "$^\\dagger$", "html": "&dagger;", "csv": "†"}
#: the mark of a method whose gap to the best is below the minimum detectable difference
TIED = {"md": "≈", "latex": "$^{\\approx}$", "html": "&asymp;", "csv": "≈"}
TESTS = ("wilcoxon", "ttest", "bootstrap", "mcnemar")
CURVE_X = ("auto", "test_rate", "rate")
DROP_REFERENCES = ("complete", "rate0")


# --------------------------------------------------------------------------------------------------
# frames and pairing


def seed_frame(records: list[RunRecord], metric: str | None = None) -> pd.DataFrame:
    """:func:`records_frame` of the finished runs (with test mask hash, task and predictions file)."""
    ok = [r for r in records if r.ok]
    if not ok:
        raise MMBenchError("no finished runs (status ok) among the given records")
    df = records_frame(ok, metric)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


def _cell_label(keys: tuple) -> str:
    cell = dict(zip(CELL_KEYS, keys, strict=True))
    text = f"{cell['dataset']} {cell['scenario']} rate={cell['rate']}"
    if str(cell["test_rate"]) != str(cell["rate"]):
        text += f" test_rate={cell['test_rate']}"
    return text


def check_pairing(df: pd.DataFrame) -> None:
    """Refuse to pair runs that do not share a test mask, or that are ambiguous.

    Within one cell and seed every method must have been tested on the same mask (same hash), and
    each method must have at most one run (two runs of one method name with different overrides
    cannot be paired).
    """
    for keys, grp in df.groupby([*CELL_KEYS, "seed"], dropna=False, sort=True):
        dup = grp[grp.duplicated("method", keep=False)]
        if not dup.empty:
            m = dup["method"].iloc[0]
            ids = ", ".join(dup.loc[dup["method"] == m, "run_id"].str[:8])
            raise MMBenchError(f"{_cell_label(keys[:-1])} seed {keys[-1]}: several runs of method {m!r} "
                               f"(run ids {ids}); keep one per method (filter with --method or separate "
                               "results folders) before pairing")
        hashes = {h for h in grp["mask_hash"] if h is not None}
        if len(hashes) > 1 or (hashes and grp["mask_hash"].isna().any()):
            pairs = zip(grp["method"], grp["mask_hash"], strict=True)
            detail = ", ".join(f"{m}: {h}" for m, h in pairs)
            raise MMBenchError(f"{_cell_label(keys[:-1])} seed {keys[-1]}: runs were tested on different "
                               f"missingness masks ({detail}); paired tests need identical test masks "
                               "(same dataset, protocol cell and --sim-seed)")


# --------------------------------------------------------------------------------------------------
# tests


def min_wilcoxon_p(n: int) -> float:
    """Smallest exact two-sided Wilcoxon signed-rank p-value with ``n`` pairs: 2 / 2^n."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired samples ``a`` and ``b``: (statistic, p).

    Exact null distribution where scipy allows it (n <= 50, no ties); zero differences are dropped
    (Wilcoxon's convention); all-zero differences give p = 1; no pairs give NaN.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    if d.size == 0:
        return math.nan, math.nan
    if np.all(d == 0):
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaNs are left out of the family and stay NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def _load_predictions(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise MMBenchError(f"predictions file {path} not found (the bootstrap test needs the .npz written "
                           "next to each record)")
    with np.load(path) as z:
        arrays = {k: z[k] for k in ("logits", "y", "present", "index")}
    order = np.argsort(arrays["index"], kind="stable")
    return {k: v[order] for k, v in arrays.items()}


def _metric_fn(metric: str, task: str, logits: np.ndarray, y: np.ndarray):
    """A function of row indices -> metric value; vectorised over a 2-D index array for accuracy."""
    from ..metrics import compute_metrics

    if metric == "accuracy" and task != "multilabel":
        correct = (logits.argmax(axis=1) == y).astype(float)
        return lambda idx: correct[idx].mean(axis=-1)

    def generic(idx: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(idx)
        vals = [compute_metrics(logits[r], y[r], task)[metric] for r in rows]
        return np.array([math.nan if v is None else v for v in vals], dtype=float)

    return generic


def _scalar(v: Any) -> float:
    return float(np.asarray(v, dtype=float).reshape(-1)[0])


Predictions = dict[str, np.ndarray]


def paired_bootstrap_p(pairs: list[tuple[Predictions, Predictions]], metric: str, task: str,
                       n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap over test samples: (observed difference, two-sided p).

    ``pairs`` holds, per training seed, the predictions of method A and method B on the same test
    rows and masks. Each replicate resamples the test rows of every seed with replacement (the same
    rows for A and B) and takes the seed-averaged difference metric(A) - metric(B); the two-sided p is
    ``min(1, 2 * min(#(d* <= 0) + 1, #(d* >= 0) + 1) / (B + 1))``. This captures test-sample noise,
    not the variance over training seeds.
    """
    rng = np.random.default_rng(seed)
    observed, boot = [], []
    for a, b in pairs:
        if not (np.array_equal(a["index"], b["index"]) and np.array_equal(a["present"], b["present"])):
            raise MMBenchError("paired bootstrap: the two runs' predictions cover different test rows or "
                               "masks; they cannot be paired")
        n = a["y"].shape[0]
        fa = _metric_fn(metric, task, a["logits"], a["y"])
        fb = _metric_fn(metric, task, b["logits"], b["y"])
        full = np.arange(n)
        observed.append(_scalar(fa(full)) - _scalar(fb(full)))
        reps = []
        for start in range(0, n_boot, 200):
            idx = rng.integers(0, n, size=(min(200, n_boot - start), n))
            reps.append(fa(idx) - fb(idx))
        boot.append(np.concatenate(reps))
    d = np.nanmean(np.stack(boot), axis=0)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float(np.mean(observed)), math.nan
    lo, hi = int((d <= 0).sum()), int((d >= 0).sum())
    p = min(1.0, 2.0 * (min(lo, hi) + 1) / (d.size + 1))
    return float(np.mean(observed)), p


# --------------------------------------------------------------------------------------------------
# per cell: every method against the best


def prediction_paths(results_dir: str | Path) -> dict[str, Path]:
    """``run_id -> predictions .npz path`` for every record below ``results_dir``."""
    from ..records import iter_records

    out = {}
    for path, rec in iter_records(results_dir):
        name = rec.files.get("predictions")
        if name:
            out[rec.run_id] = path.parent / name
    return out


def compare_to_best(records: list[RunRecord], metric: str | None = None, *, test: str = "wilcoxon",
                    alpha: float = 0.05, predictions: dict[str, Path] | None = None, n_boot: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """Per cell, each method against the cell's best mean: paired two-sided p, Holm-adjusted in the row.

    ``test="wilcoxon"`` pairs the per-seed test metrics by seed; ``test="bootstrap"`` pairs test
    samples through :func:`paired_bootstrap_p` (needs ``predictions``, see :func:`prediction_paths`).
    The best is the highest mean, or the lowest for a lower-is-better metric (``ece``, ``brier``).
    Columns: the cell keys, ``method``, ``metric``, ``mean``, ``n`` (paired seeds), ``best``, ``gap``
    (to the best, in the better direction), ``sd_diff``, ``mdd``, ``below_mdd`` (the gap is below the
    minimum detectable difference: tied), ``seeds_needed``, ``p``, ``p_holm`` and ``tie`` (not the best
    and ``p_holm >= alpha``: marked with a dagger).
    """
    if test not in TESTS:
        raise MMBenchError(f"unknown test {test!r}; expected one of {', '.join(TESTS)}")
    if test in ("bootstrap", "mcnemar") and predictions is None:
        raise MMBenchError(f"the {test} test needs the predictions files (prediction_paths(results_dir))")
    df = seed_frame(records, metric)
    check_pairing(df)
    rows = []
    for keys, cell in df.groupby(CELL_KEYS, dropna=False, sort=True):
        means = cell.groupby("method")["value"].mean().dropna()
        if means.empty:
            continue
        sign = 1.0 if higher_is_better(str(cell["metric"].iloc[0])) else -1.0
        best = str(means.idxmax() if sign > 0 else means.idxmin())
        wide = cell.pivot(index="seed", columns="method", values="value")
        ids = cell.pivot(index="seed", columns="method", values="run_id")
        part = []
        for m, mean in means.items():
            both = wide[[best, m]].dropna()
            diffs = sign * (both[best] - both[m]).to_numpy(dtype=float)
            p = math.nan
            if m != best and test == "wilcoxon":
                p = wilcoxon_p(both[best].to_numpy(), both[m].to_numpy())[1]
            elif m != best and test == "ttest":
                p = paired_t_p(both[best].to_numpy(), both[m].to_numpy())
            elif m != best:
                task = str(cell["task"].iloc[0])
                pairs = [(_load_predictions(_pred(predictions, ids.at[s, best])),
                          _load_predictions(_pred(predictions, ids.at[s, m]))) for s in both.index]
                if pairs and test == "bootstrap":
                    p = paired_bootstrap_p(pairs, str(cell["metric"].iloc[0]), task, n_boot, seed)[1]
                elif pairs:
                    p = _mcnemar(pairs)
            n = int(len(both))
            sd = float(np.std(diffs, ddof=1)) if n > 1 else math.nan
            gap = float(sign * (means[best] - mean))
            row_mdd = mdd(sd, n) if m != best else math.nan
            part.append({**dict(zip(CELL_KEYS, keys, strict=True)), "method": m,
                         "metric": cell["metric"].iloc[0], "mean": float(mean), "n": n, "best": m == best,
                         "gap": gap, "sd_diff": sd, "mdd": row_mdd,
                         "below_mdd": bool(m != best and np.isfinite(row_mdd) and gap < row_mdd),
                         "seeds_needed": seeds_needed(gap, sd) if m != best and np.isfinite(sd) else None,
                         "p": p})
        adj = holm([r["p"] for r in part])
        for r, pa in zip(part, adj, strict=True):
            r["p_holm"] = float(pa)
            r["tie"] = bool(not r["best"] and not math.isnan(pa) and pa >= alpha)
        rows.extend(part)
    return pd.DataFrame(rows)


def _mcnemar(pairs: list[tuple[Predictions, Predictions]]) -> float:
    """Exact McNemar p over the discordant test rows of every seed (counts pooled over seeds)."""
    only_a = only_b = 0
    for a, b in pairs:
        if not (np.array_equal(a["index"], b["index"]) and np.array_equal(a["present"], b["present"])):
            raise MMBenchError("McNemar test: the two runs' predictions cover different test rows or masks; "
                               "they cannot be paired")
        if a["y"].ndim != 1:
            raise MMBenchError("McNemar test: defined for single-label tasks (per-row correct / wrong)")
        x, y, _ = mcnemar_p(a["logits"].argmax(axis=1) == a["y"], b["logits"].argmax(axis=1) == b["y"])
        only_a, only_b = only_a + x, only_b + y
    return mcnemar_counts_p(only_a, only_b)


def _pred(predictions: dict[str, Path] | None, run_id: str) -> Path:
    if not predictions or run_id not in predictions:
        raise MMBenchError(f"run {run_id[:8]} has no predictions file; the bootstrap test needs them "
                           "(use the Wilcoxon test over seeds instead)")
    return predictions[run_id]


def render_with_stats(records: list[RunRecord], fmt: str = "md", metric: str | None = None, *,
                      test: str = "wilcoxon", alpha: float = 0.05, predictions: dict[str, Path] | None = None,
                      n_boot: int = 1000) -> tuple[str, pd.DataFrame]:
    """The comparison table of :func:`mmbench.report.tables.render` with a dagger on every method not
    significantly different from the row's best, ``≈`` on every method whose gap to the best is below
    the minimum detectable difference, and the row's seeds and MDD (see :func:`compare_to_best`); also
    returns the tests.

    ``csv`` gets the columns ``p_vs_best``, ``p_holm``, ``not_sig_vs_best``, ``mdd``, ``below_mdd`` and
    ``seeds_needed`` instead of marks.
    """
    comp = compare_to_best(records, metric, test=test, alpha=alpha, predictions=predictions, n_boot=n_boot)
    summary = summarize(records, metric)
    key = [*CELL_KEYS, "method"]

    def skey(row: Any) -> tuple[str, ...]:
        return tuple(str(row[k]) for k in key)

    tested = {skey(r): r for _, r in comp.iterrows()}
    if fmt == "csv":
        hits = [tested.get(skey(r), {}) for _, r in summary.iterrows()]
        summary["p_vs_best"] = [h.get("p", math.nan) for h in hits]
        summary["p_holm"] = [h.get("p_holm", math.nan) for h in hits]
        summary["not_sig_vs_best"] = [bool(h.get("tie", False)) for h in hits]
        summary["mdd"] = [h.get("mdd", math.nan) for h in hits]
        summary["below_mdd"] = [bool(h.get("below_mdd", False)) for h in hits]
        summary["seeds_needed"] = pd.array([h.get("seeds_needed") for h in hits], dtype="Int64")
        return summary.to_csv(index=False, float_format="%.6f"), comp
    if fmt not in ("md", "latex", "html"):
        raise MMBenchError(f"unknown table format {fmt!r}; expected md, csv, latex or html")
    table, text = _marked_table(summary, tested, fmt, metric, test, alpha, n_boot)
    metrics = [metric] if metric else sorted(summary["metric"].unique())
    if fmt == "md":
        return text + "\n\n" + table.to_markdown(index=False, disable_numparse=True) + "\n", comp
    if fmt == "latex":
        label = "tab:mmbench-" + "-".join(metrics).replace("_", "-") + "-stats"
        return latex_table(table, text, label), comp
    return f"<p>{html.escape(text)}</p>\n" + table.to_html(index=False, escape=False), comp


def stats_table(records: list[RunRecord], fmt: str = "html", metric: str | None = None, *, test: str = "wilcoxon",
                alpha: float = 0.05, second: bool | None = None) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """The marked table of :func:`render_with_stats` as a frame (cells ready for ``fmt``), its caption and
    the tests (``second``: underline the second best, see :func:`mmbench.report.tables.pivot`)."""
    comp = compare_to_best(records, metric, test=test, alpha=alpha)
    summary = summarize(records, metric)
    tested = {tuple(str(r[k]) for k in (*CELL_KEYS, "method")): r for _, r in comp.iterrows()}
    table, text = _marked_table(summary, tested, fmt, metric, test, alpha, 1000, second)
    return table, text, comp


def _marked_table(summary: pd.DataFrame, tested: dict[tuple[str, ...], Any], fmt: str, metric: str | None,
                  test: str, alpha: float, n_boot: int, second: bool | None = None) -> tuple[pd.DataFrame, str]:
    """The pivot of ``summary`` with dagger / tied marks, seeds and MDD columns, and its caption."""
    dash = "--" if fmt == "latex" else "–"
    table = pivot(summary, fmt, second)
    assert summary.groupby(CELL_KEYS, dropna=False).ngroups == len(table), "pivot rows must follow the cells"
    seeds_col, mdd_col = [], []
    for i, (keys, grp) in enumerate(summary.groupby(CELL_KEYS, dropna=False, sort=True)):
        unit = display(str(grp["metric"].iloc[0]))
        row_mdds = []
        n_seeds = set()
        for m in table.columns:
            hit = tested.get(tuple(str(k) for k in (*keys, m)))
            if hit is None:
                continue
            n_seeds.add(int(hit["n"]))
            if np.isfinite(hit["mdd"]):
                row_mdds.append(unit.scale * float(hit["mdd"]))
            marks = (DAGGER[fmt] if hit["tie"] else "") + (TIED[fmt] if hit["below_mdd"] else "")
            if fmt == "latex" and marks:  # one superscript: "$^a$$^b$" would read as display math
                marks = "$^{" + ("\\dagger" if hit["tie"] else "") + ("\\approx" if hit["below_mdd"] else "") + "}$"
            if marks:
                table.at[i, m] = f"{table.at[i, m]}{marks}"
        seeds_col.append("/".join(str(n) for n in sorted(n_seeds)) or dash)
        mdd_col.append(f"{np.median(row_mdds):.{unit.decimals}f}" if row_mdds else dash)
    table["seeds"] = seeds_col
    metrics = [metric] if metric else sorted(summary["metric"].unique())
    table["MDD (pp)" if all(display(m).unit == "%" for m in metrics) else "MDD"] = mdd_col
    how = {"wilcoxon": "two-sided Wilcoxon signed-rank test paired by seed",
           "ttest": "two-sided paired t-test by seed",
           "bootstrap": f"two-sided paired bootstrap over test samples, {n_boot} replicates",
           "mcnemar": "exact McNemar test on the same test rows, discordant rows pooled over seeds"}[test]
    legend = (f"; † not significantly different from the best ({how}, Holm-adjusted within the row, "
              f"alpha = {alpha:g}); ≈ tied: gap to the best below the minimum detectable difference (MDD: 80% "
              "power, alpha 0.05, paired t-test at the observed spread of the per-seed differences; median "
              "over the row)")
    return table, caption(metrics, second=fmt == "latex" if second is None else second, extra=legend)


# --------------------------------------------------------------------------------------------------
# across cells: Friedman, average ranks, pairwise Wilcoxon-Holm


@dataclass
class FriedmanResult:
    """Friedman test over blocks (dataset x cell, seeds averaged) with ranks and post-hoc tests."""

    statistic: float
    p: float
    n_blocks: int
    n_methods: int
    dropped_blocks: int
    ranks: pd.DataFrame  # method, avg_rank, mean, n_blocks (sorted best first)
    pairwise: pd.DataFrame  # a, b, n, mean_diff, statistic, p, p_holm, significant
    blocks: pd.DataFrame  # block label x method matrix of seed-averaged values
    metric: str | None = None  # the ranked metric (its direction decides rank 1)


def block_matrix(records: list[RunRecord], metric: str | None = None) -> tuple[pd.DataFrame, int]:
    """Blocks (dataset x cell) x methods of seed-averaged test metrics; blocks missing a method are
    dropped (complete blocks only). Returns the matrix and the number of dropped blocks. Without
    ``metric`` every dataset uses its primary metric; mixing higher- and lower-is-better metrics in one
    ranking is refused."""
    df = seed_frame(records, metric)
    check_pairing(df)
    directions = {higher_is_better(str(m)) for m in df["metric"].dropna().unique()}
    if len(directions) > 1:
        names = ", ".join(sorted(df["metric"].unique()))
        raise MMBenchError(f"cannot rank across metrics of opposite directions ({names}); pass --metric")
    means = df.groupby([*CELL_KEYS, "method"], dropna=False)["value"].mean().reset_index()
    means["block"] = [_cell_label(tuple(r[k] for k in CELL_KEYS)) + f" [{r['availability']}]"
                      for _, r in means.iterrows()]
    mat = means.pivot(index="block", columns="method", values="value")
    full = mat.dropna(axis=0, how="any")
    full.attrs["metric"] = str(df["metric"].iloc[0]) if len(df) else None
    return full, len(mat) - len(full)


def average_ranks(matrix: pd.DataFrame, higher: bool = True) -> pd.Series:
    """Mean rank of each method over blocks (1 = best: the highest value, or the lowest when not
    ``higher``; ties get average ranks)."""
    ranks = matrix.rank(axis=1, ascending=not higher, method="average")
    return ranks.mean(axis=0)


def friedman_summary(records: list[RunRecord], metric: str | None = None,
                     alpha: float = 0.05) -> FriedmanResult:
    """Friedman test, average ranks and Holm-adjusted pairwise Wilcoxon tests across blocks."""
    mat, dropped = block_matrix(records, metric)
    k, n = mat.shape[1], mat.shape[0]
    if k < 2 or n < 1:
        raise MMBenchError(f"ranking needs at least 2 methods on at least 1 common cell; have {k} method(s) "
                           f"on {n} complete cell(s) ({dropped} cell(s) lack some method)")
    stat, p = math.nan, math.nan
    if k >= 3 and n >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.friedmanchisquare(*[mat[c].to_numpy() for c in mat.columns])
        stat, p = float(res.statistic), float(res.pvalue)
    ranked = mat.attrs.get("metric")
    avg = average_ranks(mat, higher_is_better(str(ranked or "accuracy")))
    ranks = pd.DataFrame({"method": avg.index, "avg_rank": avg.to_numpy(),
                          "mean": mat.mean(axis=0).to_numpy(), "n_blocks": n})
    ranks = ranks.sort_values("avg_rank", kind="stable").reset_index(drop=True)
    pairs = []
    methods = list(ranks["method"])
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            s, pv = wilcoxon_p(mat[a].to_numpy(), mat[b].to_numpy())
            pairs.append({"a": a, "b": b, "n": n, "mean_diff": float((mat[a] - mat[b]).mean()),
                          "statistic": s, "p": pv})
    pw = pd.DataFrame(pairs, columns=["a", "b", "n", "mean_diff", "statistic", "p"])
    pw["p_holm"] = holm(pw["p"].to_numpy()) if len(pw) else []
    pw["significant"] = pw["p_holm"] < alpha
    return FriedmanResult(stat, p, n, k, dropped, ranks, pw, mat, ranked)


# --------------------------------------------------------------------------------------------------
# robustness summaries: drop against the complete / 0% condition, area under the curve


def curve_points(records: list[RunRecord], metric: str | None = None,
                 x: str = "auto") -> tuple[pd.DataFrame, str]:
    """Per-seed points of metric-vs-missing-rate curves: (frame with ``group``, ``x``, ``method``,
    ``seed``, ``value`` and the group keys, the x axis used).

    ``x="test_rate"``: test-sweep grids, one curve per (dataset, scenario, train rate) against the
    test missing rate. ``x="rate"``: grids like DFPL Table I where train = val = test rate; one curve
    per (dataset, scenario), and runs of scenario ``none`` (0% missing) join every scenario at x = 0.
    ``auto`` picks ``test_rate`` when some (dataset, scenario, train rate) has several test rates.
    Imbalanced (per-modality) cells have no single rate and are left out.
    """
    if x not in CURVE_X:
        raise MMBenchError(f"unknown curve axis {x!r}; expected one of {', '.join(CURVE_X)}")
    df = seed_frame(records, metric)
    df = df[(df["scenario"] != "imbalanced") & df["value"].notna()].copy()
    df["rate_f"] = pd.to_numeric(df["rate"], errors="coerce")
    df["test_rate_f"] = pd.to_numeric(df["test_rate"], errors="coerce")
    df = df.dropna(subset=["rate_f", "test_rate_f"])
    if df.empty:
        raise MMBenchError("no runs with a single missing rate to draw curves from "
                           "(imbalanced cells have none)")
    if x == "auto":
        n_test = df[df["scenario"] != "none"].groupby(["dataset", "scenario", "rate"])["test_rate"].nunique()
        x = "test_rate" if (n_test > 1).any() else "rate"
    if x == "test_rate":
        out = df.assign(x=df["test_rate_f"])
        keys = zip(out["dataset"], out["scenario"], out["rate"], strict=True)
        out["group"] = [f"{d} · {s} · train rate {r}" for d, s, r in keys]
    else:
        main = df[(df["rate_f"] == df["test_rate_f"]) & (df["scenario"] != "none")]
        none = df[df["scenario"] == "none"]
        parts = [main]
        for (d, s) in main[["dataset", "scenario"]].drop_duplicates().itertuples(index=False):
            parts.append(none[none["dataset"] == d].assign(scenario=s))
        out = pd.concat(parts, ignore_index=True)
        if out.empty:
            raise MMBenchError("no runs with train rate = test rate (use --x test_rate for test sweeps)")
        out["x"] = out["rate_f"]
        out["group"] = [f"{d} · {s}" for d, s in zip(out["dataset"], out["scenario"], strict=True)]
    cols = ["group", "dataset", "scenario", "rate", "method", "seed", "x", "value", "metric"]
    return out[cols].sort_values(["group", "method", "seed", "x"]).reset_index(drop=True), x


def trapezoid_auc(x: np.ndarray, y: np.ndarray, normalize: bool = True) -> float:
    """Trapezoid-rule area under y(x) (sorted by x); divided by the x range when ``normalize``."""
    order = np.argsort(x)
    x, y = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
    if x.size < 2 or x[-1] == x[0]:
        return math.nan
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return area / float(x[-1] - x[0]) if normalize else area


def auc_summary(records: list[RunRecord], metric: str | None = None, x: str = "auto",
                normalize: bool = True) -> pd.DataFrame:
    """Area under the metric vs missing-rate curve per curve group and method, mean ± std over seeds.

    Every (method, seed) of a group is integrated over the same x points, the rates that all of
    them have (so methods are compared on one grid); normalised by the x range it is the curve's
    mean height, in the metric's units.
    """
    pts, axis = curve_points(records, metric, x)
    rows = []
    for g, grp in pts.groupby("group", sort=True):
        per = grp.groupby(["method", "seed"])["x"].apply(frozenset)
        common = sorted(frozenset.intersection(*per.tolist()))
        if len(common) < 2:
            continue
        sub = grp[grp["x"].isin(common)]
        aucs = pd.DataFrame(
            [{"method": m, "seed": s,
              "auc": trapezoid_auc(t["x"].to_numpy(), t["value"].to_numpy(), normalize)}
             for (m, s), t in sub.groupby(["method", "seed"], sort=True)])
        for m, a in aucs.groupby("method", sort=True):
            rows.append({"group": g, "axis": axis, "method": m, "metric": grp["metric"].iloc[0],
                         "auc": float(a["auc"].mean()),
                         "std": float(a["auc"].std(ddof=1)) if len(a) > 1 else 0.0, "n": int(len(a)),
                         "x_min": common[0], "x_max": common[-1], "n_points": len(common)})
    if not rows:
        raise MMBenchError("no curve has at least 2 missing rates shared by all its methods and seeds")
    return pd.DataFrame(rows)


def drop_summary(records: list[RunRecord], metric: str | None = None,
                 reference: str = "complete") -> pd.DataFrame:
    """Change of the test metric against full-modality data, per cell and method (mean ± std over seeds).

    ``delta = value - reference`` of the same method and seed (timm ``top1_diff`` sign: negative is
    a drop). ``reference="complete"``: the same run's complete-pattern rows (the same trained model
    on the test rows that kept both modalities; always available when such rows exist).
    ``reference="rate0"``: a run at 0% missing - the same train cell tested at rate 0 (test sweeps)
    or else the scenario ``none`` run - so the training-time loss of modalities counts as well.
    """
    if reference not in DROP_REFERENCES:
        raise MMBenchError(f"unknown reference {reference!r}; expected one of {', '.join(DROP_REFERENCES)}")
    df = seed_frame(records, metric)
    if reference == "complete":
        df["reference"] = pd.to_numeric(df["value_complete"], errors="coerce")
    else:
        zero = df[pd.to_numeric(df["test_rate"], errors="coerce") == 0]
        sweep = {(r.dataset, r.method, r.seed, r.scenario, r.rate): r.value for r in zero.itertuples()}
        none = {(r.dataset, r.method, r.seed): r.value for r in zero[zero["scenario"] == "none"].itertuples()}
        df["reference"] = [sweep.get((r.dataset, r.method, r.seed, r.scenario, r.rate),
                                     none.get((r.dataset, r.method, r.seed), math.nan))
                           for r in df.itertuples()]
        df = df[pd.to_numeric(df["test_rate"], errors="coerce") != 0]
    df["delta"] = df["value"] - df["reference"]
    df = df.dropna(subset=["delta"])
    if df.empty:
        raise MMBenchError(f"no run has a {reference!r} reference value to measure a drop against")
    agg = (df.groupby([*CELL_KEYS, "method", "metric"], dropna=False)
             .agg(value=("value", "mean"), reference=("reference", "mean"), delta=("delta", "mean"),
                  std=("delta", lambda s: float(s.std(ddof=1)) if s.count() > 1 else 0.0),
                  n=("delta", "count"))
             .reset_index())
    return agg.sort_values([*CELL_KEYS, "method"]).reset_index(drop=True)

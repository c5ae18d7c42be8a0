"""One self-contained HTML page for a results folder (``mmbench report RESULTS_DIR --out DIR``).

The page holds the comparison tables (primary metric with significance and tie marks, ECE, Brier
score), the cost table, the ranking across cells with its critical-difference diagram, every figure
of :mod:`mmbench.report.plots` that the records allow (embedded as PNG data URIs; PNG and PDF files
are written beside the page under ``figures/``), the environment and the settings of every method,
and one line per run with a link to its record. It needs no JavaScript and no network. A figure
that the records cannot give (no train x test sweep, no saved attention, the ``report`` extra not
installed, ...) is skipped with one line saying why.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import MMBenchError
from ..records import RunRecord, atomic_write_bytes, load_records
from . import plots
from .costs import costs_table
from .frame import CELL_KEYS, flatten
from .stats import friedman_summary, stats_table
from .tables import comparison_table, display, metric_title

CALIBRATION = ("ece", "brier")
#: at most this many method x cell groups in the attention figure (three panels each); t-SNE: one cell
MAX_GROUPS = 6
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:2rem auto;max-width:78rem;
padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ccc}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #d0d0d0;padding:.25rem .5rem;text-align:right;vertical-align:top;white-space:nowrap}
td.w{white-space:normal;text-align:left;min-width:30rem}.scroll{overflow-x:auto}
th{background:#f3f3f3}td.t,th.t{text-align:left}
caption{caption-side:top;text-align:left;font-size:.85rem;color:#444;padding-bottom:.3rem}
figure{margin:1rem 0 2rem}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#444}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4rem .8rem}
.muted{color:#666;font-size:.85rem}code{font-size:.85rem}nav a{margin-right:.8rem}
"""


@dataclass
class Report:
    """What :func:`build_report` wrote and what it left out."""

    index: Path
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_table(table: pd.DataFrame, caption: str = "", text_columns: tuple[str, ...] = (
        "Dataset", "Method", "Image", "Tabular", "Test", "Device", "method", "cell", "run", "setting", "value"),
               wrap: tuple[str, ...] = ("settings", "options")) -> str:
    """An HTML table of ``table`` whose cells are already HTML (escaped text, ``<b>``/``<u>`` marks);
    the header and caption are escaped here. Cells do not wrap, except in the ``wrap`` columns."""
    cls = {c: ' class="w"' if c in wrap else ' class="t"' if c in text_columns else "" for c in table.columns}
    head = "".join(f"<th{cls[c]}>{_e(c)}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td{cls[c]}>{row[c]}</td>" for c in table.columns) + "</tr>\n"
                   for _, row in table.iterrows())
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table></div>\n'


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A frame of plain values, escaped for HTML."""
    return pd.DataFrame(rows).map(lambda v: _e("–" if v is None else v))


class _Page:
    """Accumulates sections, figures and notes."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.parts: list[str] = []
        self.toc: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.figures: list[Path] = []

    def section(self, anchor: str, title: str) -> None:
        self.toc.append((anchor, title))
        self.parts.append(f'<h2 id="{anchor}">{_e(title)}</h2>\n')

    def add(self, text: str) -> None:
        self.parts.append(text)

    def note(self, what: str, why: str) -> None:
        self.notes.append(f"{what} skipped: {why}")

    def figure(self, name: str, title: str, caption: str, draw: Callable[[Path], list[Path]]) -> None:
        """Draw a figure into ``figures/<name>.png|.pdf`` and embed the PNG; a note when it cannot be drawn."""
        try:
            paths = draw(self.out / "figures" / name)
        except MMBenchError as exc:
            self.note(f"figure '{title}'", str(exc))
            return
        self.figures.extend(paths)
        png = next(p for p in paths if p.suffix == ".png")
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        links = " · ".join(f'<a href="figures/{_e(p.name)}">{p.suffix[1:].upper()}</a>' for p in paths)
        self.parts.append(f'<figure id="fig-{_e(name)}"><h3>{_e(title)}</h3>'
                          f'<img src="data:image/png;base64,{data}" alt="{_e(title)}">'
                          f"<figcaption>{_e(caption)} ({links})</figcaption></figure>\n")


def _prediction_paths(paths: dict[str, Path], records: list[RunRecord]) -> dict[str, Path]:
    out = {}
    for r in records:
        name = r.files.get("predictions")
        if name and r.run_id in paths:
            out[r.run_id] = paths[r.run_id].parent / name
    return out


def _table_metrics(records: list[RunRecord], metric: str | None) -> list[str | None]:
    """The metrics with a comparison table: ``metric`` (None: each dataset's primary), then ECE and Brier."""
    return [metric] + [m for m in CALIBRATION if m != metric and any(r.metrics.test.get(m) is not None
                                                                       for r in records)]


def _comparison(page: _Page, records: list[RunRecord], metric: str | None, alpha: float) -> None:
    names = [metric] if metric else sorted({r.primary_metric for r in records})
    title = "Test " + ", ".join(metric_title(m) for m in names)
    page.add(f"<h3>{_e(title)}</h3>\n")
    table = None
    try:
        table, cap, _ = stats_table(records, "html", metric, alpha=alpha, second=True)
    except MMBenchError as exc:
        page.note(f"significance marks for {metric}", str(exc))
    if table is None:
        table, cap = comparison_table(records, "html", metric, second=True)
    page.add(html_table(table, cap))


def _pick_groups(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most ``n`` (cell, method) groups for the attention / t-SNE figures, whole cells only (the first
    cell always, with all its methods): cells with train = test rate first, then those with the most
    methods, then the rate nearest 50%."""
    df = df.copy()
    df["same"] = df["rate"].astype(str) == df["test_rate"].astype(str)
    cells = (df.groupby(CELL_KEYS, dropna=False, sort=True)
               .agg(same=("same", "first"), methods=("method", "nunique")).reset_index())
    cells["dist"] = (pd.to_numeric(cells["rate"], errors="coerce") - 0.5).abs().fillna(1.0)
    cells = cells.sort_values(["same", "methods", "dist"], ascending=[False, False, True], kind="stable")
    keep, count = [], 0
    for _, c in cells.iterrows():
        if count + int(c["methods"]) > n and keep:
            break
        keep.append(tuple(c[k] for k in CELL_KEYS))
        count += int(c["methods"])
    key = pd.Series(list(zip(*[df[k] for k in CELL_KEYS], strict=True)), index=df.index)
    return df[key.isin(keep)]


def _subset(records: list[RunRecord], run_ids: set[str]) -> list[RunRecord]:
    return [r for r in records if r.run_id in run_ids]


def _env_table(records: list[RunRecord]) -> pd.DataFrame:
    keys = sorted({k for r in records for k in r.env})
    rows = []
    for k in keys:
        counts: dict[str, int] = {}
        for r in records:
            v = str(r.env.get(k, "–"))
            counts[v] = counts.get(v, 0) + 1
        rows.append({"setting": k, "value": "; ".join(f"{v} ({n} runs)" if len(counts) > 1 else v
                                                      for v, n in sorted(counts.items()))})
    return _frame(rows)


def _settings(flat: list[dict[str, Any]], prefix: str) -> str:
    """``key=value`` of every flattened setting under ``prefix``, values that differ joined by ``|``."""
    keys = sorted({k for f in flat for k in f if k == prefix or k.startswith(prefix + ".")})
    items = []
    for k in keys:
        vals = dict.fromkeys(repr(v) if isinstance(v, str) else str(v) for v in (f.get(k) for f in flat))
        items.append(f"{k[len(prefix) + 1:] or k}={' | '.join(vals)}")
    return ", ".join(items)


def _spec_table(records: list[RunRecord]) -> pd.DataFrame:
    """Per method label: the settings of its runs, one line per part of the spec (method, head, balancer,
    encoders, train); values that differ between its runs joined by ``|``."""
    from .frame import records_frame

    labels = records_frame(records)["method"].tolist()
    rows = []
    for method in sorted(set(labels)):
        runs = [r for r, lab in zip(records, labels, strict=True) if lab == method]
        flat = [flatten({k: r.spec.get(k) for k in ("method", "head", "balancer", "encoders", "train")})
                for r in runs]
        lines = [f"<b>{part}</b>: {_e(_settings(flat, part))}" for part in ("method", "head", "balancer", "encoders",
                                                                            "train")]
        rows.append({"method": _e(method), "runs": len(runs), "settings": "<br>".join(lines)})
    return pd.DataFrame(rows)


def _dataset_table(records: list[RunRecord]) -> pd.DataFrame:
    """Per dataset: adapter, task, primary metric, hidden size and options of its runs."""
    rows = []
    for name in sorted({r.labels.dataset for r in records}):
        flat = [flatten(r.spec.get("dataset", {})) for r in records if r.labels.dataset == name]
        first = flat[0]
        rows.append({"Dataset": _e(name), "adapter": _e(first.get("adapter")), "task": _e(first.get("task")),
                     "primary metric": _e(first.get("primary_metric")), "hidden": _e(first.get("hidden")),
                     "options": _e(_settings(flat, "options"))})
    return pd.DataFrame(rows)


def _runs_table(records: list[RunRecord], paths: dict[str, Path], out: Path) -> pd.DataFrame:
    rows = []
    order = sorted(records, key=lambda r: (r.labels.dataset, r.labels.method, r.labels.scenario,
                                           str(r.labels.rate), str(r.labels.test_rate), r.labels.seed))
    for r in order:
        lab = r.labels
        cell = lab.availability if lab.test_availability == lab.availability else \
            f"{lab.availability} → test {lab.test_availability}"
        v = r.test_value()
        link = "–"
        if r.run_id in paths:
            rel = os.path.relpath(paths[r.run_id], out)
            link = f'<a href="{_e(Path(rel).as_posix())}">{_e(r.run_id[:8])}</a>'
            pred = r.files.get("predictions")
            if pred and (paths[r.run_id].parent / pred).is_file():
                link += f' · <a href="{_e(Path(rel).with_name(pred).as_posix())}">npz</a>'
        rows.append({"Dataset": _e(lab.dataset), "method": _e(lab.method), "cell": _e(cell), "seed": lab.seed,
                     "metric": _e(r.primary_metric),
                     "value": "–" if v is None else display(r.primary_metric).number(v),
                     "ece": "–" if r.metrics.test.get("ece") is None else display("ece").number(r.metrics.test["ece"]),
                     "best epoch": r.best_epoch if r.best_epoch is not None else "–",
                     "train (s)": "–" if r.timing.train_seconds is None else f"{r.timing.train_seconds:.1f}",
                     "run": link})
    return pd.DataFrame(rows)


def build_report(records: list[RunRecord], results_dir: str | Path, out_dir: str | Path,
                 paths: dict[str, Path] | None = None, *, metric: str | None = None, alpha: float = 0.05,
                 failed: int = 0) -> Report:
    """Write ``out_dir/index.html`` and ``out_dir/figures/*.png|pdf`` for ``records`` (read from
    ``results_dir``; ``paths``: run id -> record file, read from ``results_dir`` when not given);
    returns what was written and the one-line notes of what was skipped."""
    results_dir, out = Path(results_dir), Path(out_dir)
    records = [r for r in records if r.ok]
    if not records:
        raise MMBenchError(f"no finished runs under {results_dir} to report on")
    if paths is None:
        rs = load_records(results_dir)
        paths = {r.run_id: p for r, p in zip(rs.records, rs.paths, strict=True)}
    preds = _prediction_paths(paths, records)
    page = _Page(out)
    primary = metric  # None: each dataset's primary metric

    page.section("tables", "Comparison tables")
    for m in _table_metrics(records, metric):
        _comparison(page, records, m, alpha)
    page.add("<h3>Cost</h3>\n")
    try:
        table, cap = costs_table(records, "html", metric)
        page.add(html_table(table, cap))
    except MMBenchError as exc:
        page.note("cost table", str(exc))

    page.section("ranks", "Ranking across cells")
    try:
        fr = friedman_summary(records, primary, alpha)
    except MMBenchError as exc:
        page.note("ranking", str(exc))
    else:
        d = display(fr.metric or "accuracy")
        rows = [{"rank": i, "method": r.method, "average rank": f"{r.avg_rank:.2f}",
                 f"mean {metric_title(fr.metric or 'accuracy')}": d.number(r.mean)}
                for i, r in enumerate(fr.ranks.itertuples(), start=1)]
        fried = (f"Friedman chi2 = {fr.statistic:.3f}, p = {fr.p:.4g}" if fr.p == fr.p
                 else "Friedman test not computed (needs >= 3 methods and >= 2 cells)")
        page.add(html_table(_frame(rows), f"Average rank over {fr.n_blocks} cell(s) (dataset x missingness, seeds "
                                          f"averaged within each cell; 1 = best); {fried}."
                            + (f" {fr.dropped_blocks} cell(s) left out: not every method has runs there."
                               if fr.dropped_blocks else "")))
        page.figure("cd", "Critical-difference diagram",
                    "Average ranks over cells (seeds averaged within each cell); a bar joins methods that the "
                    "Holm-adjusted pairwise Wilcoxon signed-rank test over cells does not separate "
                    f"(alpha = {alpha:g}; fewer than 6 cells can never separate two methods).",
                    lambda p: plots.plot_cd(records, p, primary, alpha))

    page.section("figures", "Figures")
    page.figure("curve", "Metric against the missing rate",
                "Test metric against the missing rate, one line per method, mean ± std band over seeds.",
                lambda p: plots.plot_curves(records, p, primary))
    page.figure("heatmap", "Train x test missing rate",
                "Mean test metric over seeds for every train (= validation) and test missing rate, one panel per "
                "method, one colour scale.", lambda p: plots.plot_heatmap(records, p, primary))
    _cells_figures(page, records, primary)
    _prediction_figures(page, records, preds)

    page.section("environment", "Environment and settings")
    page.add(html_table(_env_table(records), "Environment of the runs (values that differ list their run counts)."))
    page.add(html_table(_dataset_table(records), "Datasets (options that differ between runs joined by |).",
                        text_columns=("Dataset", "adapter", "task", "primary metric")))
    page.add(html_table(_spec_table(records), "Settings per method (values that differ between runs joined by |).",
                        text_columns=("method",)))

    page.section("runs", "Runs")
    page.add(html_table(_runs_table(records, paths, out), "Every run: test value of its primary metric, ECE (%), "
                        "best epoch, training time, and links to its record (JSON) and predictions (npz), relative "
                        "to this page."))
    text = _document(page, records, results_dir, failed)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    atomic_write_bytes(index, text.encode("utf-8"))
    return Report(index, page.figures, page.notes)


def _cells_figures(page: _Page, records: list[RunRecord], primary: str | None) -> None:
    """Per-cell figures (patterns, calibration, seeds); skipped with a note beyond the panel limit."""
    page.figure("patterns", "Per missing pattern",
                "Test metric per missing pattern (complete / image only / tabular only), mean ± std over seeds; "
                "black: the Bayes ceiling where the dataset knows it (accuracy only).",
                lambda p: plots.plot_patterns(records, p, primary))
    page.figure("calibration", "Calibration per missing pattern",
                "Expected calibration error (15 equal-width confidence bins, %; lower is better) per missing "
                "pattern, mean ± std over seeds: a model can keep its accuracy and lose its calibration when a "
                "modality disappears.", lambda p: plots.plot_patterns(records, p, "ece"))
    page.figure("seeds", "Spread over seeds",
                "Test metric per seed (points) and its box plot, one panel per cell.",
                lambda p: plots.plot_seeds(records, p, primary))


def _prediction_figures(page: _Page, records: list[RunRecord], preds: dict[str, Path]) -> None:
    """Attention and t-SNE figures from the saved predictions, on a few chosen cells."""
    if not preds:
        page.note("attention and t-SNE figures", "no run has a predictions file")
        return
    for name, title, key, caption, draw, limit in (
            ("attention", "CMA attention per class", "aux_cma_attention",
             "DFPL's class-aware aggregation (Eq. 11): for the test rows of each true class, the mean attention "
             "weight of that class's query over the six rows of H (Eq. 10), per missing pattern; grey rows are "
             "unavailable in the pattern.", plots.plot_attention, MAX_GROUPS),
            ("tsne", "t-SNE of the embeddings", "emb_",
             "t-SNE of the pooled per-modality test embeddings (first test rows saved with each run; lowest seed), "
             "coloured by true class, per missing pattern; the silhouette score is computed in the embedding space.",
             plots.plot_tsne, 1)):
        try:
            df = plots.with_predictions(records, preds, key)
        except MMBenchError as exc:
            page.note(f"figure '{title}'", str(exc))
            continue
        if df.empty:
            page.figure(name, title, caption, lambda p, d=draw: d(records, p, preds))  # raises: says why
            continue
        chosen = _pick_groups(df, limit)  # t-SNE: limit 1, the first cell with all its methods
        groups = chosen.groupby([*CELL_KEYS, "method"], dropna=False).ngroups
        total = df.groupby([*CELL_KEYS, "method"], dropna=False).ngroups
        if groups < total:
            caption += f" Shown: {groups} of {total} method x cell groups (train = test rate first)."
        subset = _subset(records, set(chosen["run_id"]))
        page.figure(name, title, caption, lambda p, d=draw, s=subset: d(s, p, preds))


def _document(page: _Page, records: list[RunRecord], results_dir: Path, failed: int) -> str:
    from .. import __version__

    datasets = sorted({r.labels.dataset for r in records})
    methods = sorted({r.labels.method for r in records})
    protocols = sorted({r.labels.protocol or "ad hoc" for r in records})
    finished = sorted(r.finished_at for r in records if r.finished_at)
    when = f"; finished {finished[0]} to {finished[-1]}" if finished else ""
    notes = "".join(f"<li>{_e(n)}</li>" for n in page.notes)
    notes_html = f'<div class="note"><p>Left out of this page:</p><ul>{notes}</ul></div>\n' if notes else ""
    failed_html = (f'<p class="note">{failed} failed run(s) are not shown (status failed; see '
                   "<code>mmbench table</code> warnings).</p>\n" if failed else "")
    toc = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in page.toc)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<link rel=\"icon\" href=\"data:,\">\n"
        f"<title>mmbench report: {_e(results_dir.name or results_dir)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>mmbench report: {_e(results_dir)}</h1>\n"
        f'<p class="muted">{len(records)} finished run(s) · datasets: {_e(", ".join(datasets))} · methods: '
        f'{_e(", ".join(methods))} · protocols: {_e(", ".join(protocols))}{_e(when)} · mmbench {_e(__version__)}'
        "</p>\n"
        f"<nav>{toc}</nav>\n{failed_html}{notes_html}" + "".join(page.parts) + "</body>\n</html>\n")

"""Comparison tables like DFPL Table I: rows = missingness cells, columns = methods, mean ± std over seeds.

* ``csv``: tidy long format (one row per dataset x cell x method with mean, std, n) - the format
  ``mmbench check`` reads as a reference; values in the metric's own units (fractions).
* ``md`` / ``latex`` / ``html``: the pivoted paper table with availability columns; the best method
  per row is bold (the highest mean, or the lowest for the lower-is-better ``ece`` and ``brier``).
  LaTeX also underlines the second best (rows with at least three methods) and compiles as printed:
  a ``table`` float with a caption, ``booktabs`` rules (``\\usepackage{booktabs}``), every text cell
  escaped, ``$\\pm$``.

Units (:func:`display`): every bounded metric in percent with two decimals, except the Brier score,
shown as the raw score with three decimals (its multiclass range is 0-2, so "percent" would mislead).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import MMBenchError
from ..records import RunRecord
from .frame import CELL_KEYS, records_frame

BASELINE_FIRST = ("late_fusion",)
#: LaTeX spelling of every character that is special to LaTeX or outside what pdflatex reads by default
LATEX_CHARS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}", "[": "{[}", "]": "{]}", "±": r"$\pm$", "–": "--", "—": "---",
    "≈": r"$\approx$", "→": r"$\rightarrow$", "·": r"$\cdot$", "×": r"$\times$", "†": r"$^\dagger$",
    "≥": r"$\geq$", "≤": r"$\leq$", "η": r"$\eta$",
}


@dataclass(frozen=True)
class Display:
    """How a metric is shown: ``value * scale`` with ``decimals`` digits, in ``unit``."""

    scale: float
    decimals: int
    unit: str  # "%" or "" (raw score)
    higher_is_better: bool

    def number(self, v: float) -> str:
        """``v`` in display units, e.g. ``56.25`` or ``0.412``."""
        return f"{v * self.scale:.{self.decimals}f}"


def display(metric: str) -> Display:
    """Display units of ``metric`` (see the module docstring)."""
    from ..core import higher_is_better

    if metric == "brier":
        return Display(1.0, 3, "", False)
    return Display(100.0, 2, "%", higher_is_better(metric))


def metric_title(metric: str) -> str:
    """``accuracy (%)``, ``ece (%, lower is better)``, ``brier (Brier score, lower is better)``."""
    d = display(metric)
    if metric == "brier":
        return "brier (Brier score, lower is better)"
    return f"{metric} (%)" if d.higher_is_better else f"{metric} (%, lower is better)"


def summarize(records: list[RunRecord], metric: str | None = None) -> pd.DataFrame:
    """Mean, std and seed count per (cell, method) of the test metric (in the metric's own units)."""
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


def latex_escape(text: Any) -> str:
    """``text`` with every LaTeX special character (and the unicode signs the tables use) spelled out."""
    return "".join(LATEX_CHARS.get(c, c) for c in str(text))


def _text(value: Any, fmt: str) -> str:
    """A text cell (dataset, availability) escaped for ``fmt``."""
    if fmt == "latex":
        return latex_escape(value)
    if fmt == "html":
        return html.escape(str(value), quote=False)
    return str(value)


def _fmt(mean: float, std: float, n: int, d: Display, fmt: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "--" if fmt == "latex" else "–"
    pm = " $\\pm$ " if fmt == "latex" else " ± "
    return f"{d.number(mean)}{pm}{d.number(std)}" if n > 1 else d.number(mean)


def _emphasis(text: str, fmt: str, how: str) -> str:
    if how == "best":
        return {"md": f"**{text}**", "latex": f"\\textbf{{{text}}}", "html": f"<b>{text}</b>"}.get(fmt, text)
    return {"md": f"<u>{text}</u>", "latex": f"\\underline{{{text}}}", "html": f"<u>{text}</u>"}.get(fmt, text)


def pivot(summary: pd.DataFrame, fmt: str, second: bool | None = None) -> pd.DataFrame:
    """Paper-style table: one row per dataset x cell, availability columns, one column per method.

    The best mean per row is emphasised (bold); with ``second`` (default: LaTeX only) the second-best
    distinct mean of a row with at least three methods is underlined. Text cells are escaped for
    ``fmt`` (LaTeX, HTML); value cells are ready to print. When some cell is tested at another
    missingness than it was trained at (a test sweep), a ``Test`` column after ``Tabular`` gives every
    row's test availability.
    """
    second = fmt == "latex" if second is None else second
    methods = _method_order(sorted(summary["method"].unique()))
    with_test = bool((summary["test_availability"] != summary["availability"]).any())
    rows = []
    for keys, grp in summary.groupby(CELL_KEYS, dropna=False, sort=True):
        cell = dict(zip(CELL_KEYS, keys, strict=True))
        avail = dict(part.rsplit(" ", 1) for part in str(cell["availability"]).split(" / "))
        row: dict[str, Any] = {"Dataset": _text(cell["dataset"], fmt), "Image": _text(avail.get("Image", ""), fmt),
                               "Tabular": _text(avail.get("Tabular", ""), fmt)}
        if with_test:  # a test sweep: every row names its test availability
            row["Test"] = _text(cell["test_availability"], fmt)
        d = display(str(grp["metric"].iloc[0]))
        ranked = sorted(grp["mean"].dropna().unique(), reverse=d.higher_is_better)
        best = ranked[0] if ranked else None
        runner_up = ranked[1] if len(ranked) > 1 and second and grp["mean"].notna().sum() >= 3 else None
        for m in methods:
            hit = grp[grp["method"] == m]
            if hit.empty:
                row[m] = "--" if fmt == "latex" else "–"
                continue
            r = hit.iloc[0]
            text = _fmt(r["mean"], r["std"], int(r["n"]), d, fmt)
            if r["mean"] == best and len(grp) > 1:
                text = _emphasis(text, fmt, "best")
            elif runner_up is not None and r["mean"] == runner_up:
                text = _emphasis(text, fmt, "second")
            row[m] = text
        rows.append(row)
    return pd.DataFrame(rows)


def caption(metrics: list[str], *, second: bool = False, extra: str = "") -> str:
    """The table caption: metric, units, what is bold (and, with ``second``, that the second is underlined)."""
    name = ", ".join(metrics)
    ds = [display(m) for m in metrics]
    if all(d.higher_is_better and d.unit == "%" for d in ds):
        text = f"Test {name} (%), mean ± std over seeds; best per row in bold"
    else:
        units = "; ".join(metric_title(m) for m in metrics)
        best = ("best (lowest) per row" if not any(d.higher_is_better for d in ds) else
                "best per row (highest, or lowest where lower is better)")
        text = f"Test {units}, mean ± std over seeds; {best} in bold"
    if second:
        text += ", second best underlined (rows with three or more methods)"
    return text + extra + "."


def latex_table(table: pd.DataFrame, caption_text: str, label: str = "tab:mmbench",
                text_columns: tuple[str, ...] = ("Dataset", "Method", "Image", "Tabular", "Test")) -> str:
    """A ``table`` float with ``booktabs`` rules; ``table``'s cells must already be LaTeX (see
    :func:`pivot`), the header and caption are escaped here."""
    cols = list(table.columns)
    spec = "".join("l" if c in text_columns else "r" for c in cols)
    lines = ["% needs \\usepackage{booktabs}", "\\begin{table}[ht]", "\\centering",
             f"\\caption{{{latex_escape(caption_text)}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(latex_escape(c) for c in cols) + " \\\\", "\\midrule"]
    for _, row in table.iterrows():
        lines.append(" & ".join(str(row[c]) for c in cols) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def render(records: list[RunRecord], fmt: str = "md", metric: str | None = None) -> str:
    """The comparison table of ``records`` as text in ``fmt`` (md, csv, latex, html)."""
    if fmt not in ("md", "csv", "latex", "html"):
        raise MMBenchError(f"unknown table format {fmt!r}; expected md, csv, latex or html")
    if fmt == "csv":
        return summarize(records, metric).to_csv(index=False, float_format="%.6f")
    table, text = comparison_table(records, fmt, metric)
    if fmt == "md":
        return text + "\n\n" + table.to_markdown(index=False, disable_numparse=True) + "\n"
    if fmt == "latex":
        metrics = [metric] if metric else sorted(summarize(records)["metric"].unique())
        return latex_table(table, text, "tab:mmbench-" + "-".join(metrics).replace("_", "-"))
    return table.to_html(index=False, escape=False)


def comparison_table(records: list[RunRecord], fmt: str = "html", metric: str | None = None,
                     second: bool | None = None) -> tuple[pd.DataFrame, str]:
    """The pivoted comparison table (cells ready for ``fmt``) and its caption."""
    summary = summarize(records, metric)
    metrics = [metric] if metric else sorted(summary["metric"].unique())
    second = fmt == "latex" if second is None else second
    return pivot(summary, fmt, second), caption(metrics, second=second)

"""Regression check of results against a reference table (``mmbench table --format csv``).

A cell regresses when its mean moves the wrong way (down for accuracy-like metrics, up for ``ece`` /
``brier``) by more than ``max(k * SE, floor)``, with ``SE = sqrt(std_ref^2 / n_ref + std_cur^2 / n_cur)``
the standard error of the difference of the two seed means: the allowance follows each cell's recorded
spread instead of one global number, and ``floor`` (``--tolerance``) keeps single-seed cells from failing
on rounding. The gate fails closed: a reference cell without results, a reference that is not a finite
number, or an empty reference is a failure or an error, never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core import LOWER_IS_BETTER
from ..errors import MMBenchError
from ..records import RunRecord
from .frame import CELL_KEYS
from .tables import summarize

REF_COLUMNS = [*CELL_KEYS, "method", "metric", "mean"]


@dataclass
class CheckRow:
    """One reference cell compared with the results."""

    cell: str
    reference: float
    current: float | None
    delta: float | None
    status: str  # ok | regressed | missing
    allowed: float | None = None  # the drop this cell may show: max(k * SE, tolerance)


def read_reference(path: str | Path) -> pd.DataFrame:
    """Load a reference CSV and check its columns."""
    path = Path(path)
    if not path.is_file():
        raise MMBenchError(f"reference file {path} not found (make one with `mmbench table --format csv --out {path}`)")
    try:
        ref = pd.read_csv(path, dtype={"rate": str, "test_rate": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MMBenchError(f"reference file {path}: not a CSV table ({exc})") from None
    missing = [c for c in REF_COLUMNS if c not in ref.columns]
    if missing:
        raise MMBenchError(f"reference file {path}: missing columns {missing} (expected the output of "
                           "`mmbench table --format csv`)")
    if ref.empty:
        raise MMBenchError(f"reference file {path}: no rows (a gate with nothing to check would always pass)")
    means = pd.to_numeric(ref["mean"], errors="coerce")
    bad = ~means.notna() | ~means.map(lambda v: v == v and abs(v) != float("inf"))
    if bad.any():
        row = int(bad.idxmax())
        raise MMBenchError(f"reference file {path}: row {row + 2} has mean {ref['mean'].iloc[row]!r}; expected a "
                           "finite number (a regression gate must not pass on garbage)")
    ref["mean"] = means.astype(float)
    return ref


def _norm_rate(v: Any) -> str:
    try:
        return f"{float(v):g}"
    except (TypeError, ValueError):
        return "" if v is None or (isinstance(v, float) and v != v) else str(v)


def compare(records: list[RunRecord], ref: pd.DataFrame, tolerance: float, k: float = 0.0) -> list[CheckRow]:
    """Each reference cell's mean against the results' mean: regressed if worse by more than
    ``max(k * SE, tolerance)`` (see the module docstring; ``k = 0`` gives a plain absolute tolerance)."""
    cur = summarize(records)

    for df in (cur, ref):
        for col in ("rate", "test_rate"):
            df[col] = df[col].map(_norm_rate)
    keys = ["dataset", "scenario", "rate", "test_rate", "method", "metric"]
    cur_idx = {tuple(str(r[c]) for c in keys): r for _, r in cur.iterrows()}
    rows = []
    for _, r in ref.iterrows():
        key = tuple(str(r[c]) for c in keys)
        label = f"{r['dataset']} {r['method']} {r['scenario']} rate={r['rate']}" + (
            f" test={r['test_rate']}" if r["test_rate"] not in ("", r["rate"]) else "") + f" {r['metric']}"
        hit = cur_idx.get(key)
        if hit is None or pd.isna(hit["mean"]):
            rows.append(CheckRow(label, float(r["mean"]), None, None, "missing"))
            continue
        delta = float(hit["mean"]) - float(r["mean"])
        allowed = max(k * _se(r, hit), tolerance)
        worse = delta > allowed if r["metric"] in LOWER_IS_BETTER else delta < -allowed
        rows.append(CheckRow(label, float(r["mean"]), float(hit["mean"]), delta, "regressed" if worse else "ok",
                             allowed))
    return rows


def _se(ref: Any, cur: Any) -> float:
    """Standard error of the difference of two seed means from their std and n (0 where unknown)."""
    total = 0.0
    for row in (ref, cur):
        n = pd.to_numeric(row.get("n"), errors="coerce") if hasattr(row, "get") else None
        std = pd.to_numeric(row.get("std"), errors="coerce") if hasattr(row, "get") else None
        if n is not None and std is not None and n == n and std == std and n > 0:
            total += float(std) ** 2 / float(n)
    return total**0.5

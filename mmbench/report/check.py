"""Regression check of results against a reference table (``mmbench table --format csv``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

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


def compare(records: list[RunRecord], ref: pd.DataFrame, tolerance: float) -> list[CheckRow]:
    """Each reference cell's mean against the results' mean; regressed if lower by more than ``tolerance``."""
    cur = summarize(records)
    for df in (cur, ref):
        for col in ("rate", "test_rate"):
            df[col] = df[col].map(_norm_rate)
    keys = ["dataset", "scenario", "rate", "test_rate", "method", "metric"]
    cur_idx = {tuple(str(r[k]) for k in keys): r["mean"] for _, r in cur.iterrows()}
    rows = []
    for _, r in ref.iterrows():
        key = tuple(str(r[k]) for k in keys)
        label = f"{r['dataset']} {r['method']} {r['scenario']} rate={r['rate']}" + (
            f" test={r['test_rate']}" if r["test_rate"] not in ("", r["rate"]) else "") + f" {r['metric']}"
        current = cur_idx.get(key)
        if current is None or pd.isna(current):
            rows.append(CheckRow(label, float(r["mean"]), None, None, "missing"))
            continue
        delta = float(current) - float(r["mean"])
        rows.append(CheckRow(label, float(r["mean"]), float(current), delta,
                             "regressed" if delta < -tolerance else "ok"))
    return rows

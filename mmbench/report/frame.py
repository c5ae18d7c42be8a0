"""Run records -> a tidy pandas DataFrame (one row per run)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..data.batch import PATTERNS

KEY_COLUMNS = ["dataset", "scenario", "availability", "rate", "test_rate", "test_availability", "method"]


def records_frame(records: list[dict[str, Any]], metric: str | None = None) -> pd.DataFrame:
    """One row per record: labels, the test value of ``metric`` (default: each record's primary
    metric) overall and per pattern, the ceiling, timing."""
    rows = []
    for r in records:
        lab = r.get("labels", {})
        m = metric or r["primary_metric"]
        test = r.get("metrics", {}).get("test", {})
        row = {
            "dataset": lab.get("dataset", r["spec"]["dataset"]["name"]),
            "method": lab.get("method", r["spec"]["method"]["name"]),
            "scenario": lab.get("scenario"),
            "rate": _rate_key(lab, "rate"),
            "test_rate": _rate_key(lab, "test_rate"),
            "availability": lab.get("availability"),
            "test_availability": lab.get("test_availability"),
            "seed": lab.get("seed"),
            "metric": m,
            "value": test.get(m),
            "val_value": r.get("metrics", {}).get("val", {}).get(m),
            "status": r["status"],
            "run_id": r["run_id"],
            "train_seconds": r.get("timing", {}).get("train_seconds"),
            "step_ms": r.get("timing", {}).get("step_ms"),
        }
        by = r.get("metrics", {}).get("test_by_pattern", {})
        for p in PATTERNS:
            row[f"value_{p}"] = (by.get(p) or {}).get(m)
        ceiling = r.get("ceiling") or {}
        for p in PATTERNS:
            row[f"ceiling_{p}"] = ceiling.get(p) if m == "accuracy" else None
        rows.append(row)
    return pd.DataFrame(rows)


def _rate_key(lab: dict[str, Any], key: str) -> str:
    """Rates as a sortable label: ``0.5`` or ``image=0.5,tabular=0.1`` (imbalanced)."""
    if lab.get("scenario") == "imbalanced":
        rates = lab.get("rates") or {}
        if key == "test_rate" and lab.get("test_rates"):
            rates = lab["test_rates"]
        return ",".join(f"{k}={v:g}" for k, v in sorted(rates.items()))
    v = lab.get(key)
    return "" if v is None else f"{float(v):g}"

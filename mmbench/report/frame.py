"""Run records -> a tidy pandas DataFrame (one row per run): the only place reports read records.

Runs are pooled as seeds of one experiment only when their specs are equal up to the seeds
(:attr:`~mmbench.records.RunRecord.pooling_key`). When runs of one method label in one cell differ in
anything else (``train.epochs``, a code version, ...), the ``method`` column carries the differing
settings, e.g. ``late_fusion [train.epochs=3]``, so a table never averages different experiments.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..core import PATTERNS, REGRET
from ..records import RunRecord

KEY_COLUMNS = ["dataset", "scenario", "availability", "rate", "test_rate", "test_availability", "method"]
CELL_KEYS = ["dataset", "scenario", "rate", "test_rate", "availability", "test_availability"]
#: Spec paths never shown as a difference between pooled groups (labels, not settings).
_IGNORED = ("train_seed", "sim_seed", "method.name")


def records_frame(records: list[RunRecord], metric: str | None = None) -> pd.DataFrame:
    """One row per record: labels, the test value of ``metric`` (default: each record's primary
    metric) overall and per pattern, the ceiling and regret, costs, and pairing keys."""
    rows = []
    for r in records:
        lab = r.labels
        m = metric or r.primary_metric
        test = r.metrics.test
        regret = r.metrics.regret or {}
        if m == REGRET:  # Bayes accuracy on the same rows minus the method's (lower is better)
            test = {REGRET: regret.get("overall")}
        row: dict[str, Any] = {
            "dataset": lab.dataset, "method": lab.method, "scenario": lab.scenario,
            "rate": _rate_key(r, "rate"), "test_rate": _rate_key(r, "test_rate"),
            "availability": lab.availability, "test_availability": lab.test_availability,
            "missing": lab.missing, "seed": lab.seed, "sim_seed": lab.sim_seed, "protocol": lab.protocol,
            "metric": m, "value": test.get(m), "val_value": r.metrics.val.get(m),
            "status": r.status, "run_id": r.run_id, "training_id": r.training_id, "pooling_key": r.pooling_key,
            "task": r.spec.get("dataset", {}).get("task"),
            "mask_hash": r.masks["test"].hash if "test" in r.masks else None,
            "predictions": r.files.get("predictions"),
            "train_seconds": r.timing.train_seconds, "step_ms": r.timing.step_ms,
            "peak_memory_mb": r.timing.peak_memory_mb, "parameters": r.timing.parameters,
            "regret": regret.get("overall"),
        }
        by = r.metrics.test_by_pattern
        if m == REGRET:
            by = {p: {REGRET: regret.get(p)} for p in PATTERNS}
        ceiling = r.ceiling or {}
        for p in PATTERNS:
            row[f"value_{p}"] = (by.get(p) or {}).get(m)
            row[f"ceiling_{p}"] = ceiling.get(p) if m == "accuracy" else None
            row[f"regret_{p}"] = regret.get(p)
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["method"] = _disambiguate(df, records)
    return df


def _rate_key(r: RunRecord, key: str) -> str:
    """Rates as a sortable label: ``0.5`` or ``image=0.5,tabular=0.1`` (imbalanced)."""
    lab = r.labels
    if lab.scenario == "imbalanced":
        rates = lab.rates or {}
        if key == "test_rate" and lab.test_rates:
            rates = lab.test_rates
        return ",".join(f"{k}={v:g}" for k, v in sorted(rates.items()))
    v = getattr(lab, key)
    return "" if v is None else f"{float(v):g}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"a.b.c": value}``."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _disambiguate(df: pd.DataFrame, records: list[RunRecord]) -> list[str]:
    """Method labels, extended by the settings that distinguish pooled groups sharing a label and cell."""
    labels = list(df["method"])
    specs = {r.pooling_key: r.spec for r in records}
    for _, grp in df.groupby(CELL_KEYS + ["method"], dropna=False, sort=False):
        keys = list(dict.fromkeys(grp["pooling_key"]))
        if len(keys) < 2:
            continue
        flat = {k: flatten(specs[k]) for k in keys}
        paths = sorted(set().union(*flat.values()))
        differ = [p for p in paths if p not in _IGNORED
                  and len({repr(flat[k].get(p)) for k in keys}) > 1]
        for idx, key in zip(grp.index, grp["pooling_key"], strict=True):
            shown = ", ".join(f"{p}={_short(flat[key].get(p))}" for p in differ[:3])
            more = f", +{len(differ) - 3} more" if len(differ) > 3 else ""
            labels[idx] = f"{labels[idx]} [{shown}{more}]"
    return labels


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 24 else text[:21] + "..."

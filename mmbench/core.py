"""The dependency-free core vocabulary: modality slots, missing patterns, splits and task types.

Everything here is plain Python (no torch, numpy or pandas), so the modules that only read or plan
(records, tables, protocols, configs) share one definition with the modules that train.
"""

from __future__ import annotations

from typing import Literal

#: Modality slots, in presence-mask column order. The second slot is the non-image modality
#: (a table for DVM/ADNI/PAD/synthetic, an EHR time series for MIMIC).
MODALITIES: tuple[str, ...] = ("image", "tabular")
IMAGE, TABULAR = 0, 1

#: Missing patterns reported per test split, keyed by the presence row they match.
PATTERNS: dict[str, tuple[bool, ...]] = {
    "complete": (True, True),
    "image_only": (True, False),
    "tabular_only": (False, True),
}

#: The three splits every dataset adapter provides.
SPLITS: tuple[str, ...] = ("train", "val", "test")

Task = Literal["multiclass", "binary", "multilabel"]
TASKS: tuple[str, ...] = ("multiclass", "binary", "multilabel")

#: Metrics where a smaller value is better (calibration errors); every other metric is higher-is-better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"ece", "brier", "regret"})
#: Not a metric of the predictions alone: the Bayes rule's accuracy on the same test rows minus the method's
#: (records' ``metrics.regret``; datasets with a known generative model). Tables, stats and plots take it
#: as ``--metric regret``.
REGRET = "regret"


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (False for :data:`LOWER_IS_BETTER`)."""
    return metric not in LOWER_IS_BETTER


def pattern_name(row: tuple[bool, ...]) -> str | None:
    """The name of the missing pattern of one presence row (``None`` for no modality at all)."""
    for name, target in PATTERNS.items():
        if tuple(bool(v) for v in row) == target:
            return name
    return None


def data_root(explicit: str | None = None) -> str | None:
    """The root of real datasets: ``--data-root``, else the ``MMBENCH_DATA`` environment variable."""
    import os

    return explicit or os.environ.get("MMBENCH_DATA")

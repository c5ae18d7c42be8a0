"""Data: batch containers, adapters (one per dataset), registered by adapter name."""

from importlib import import_module

from .base import SPLITS, DataInfo, DatasetAdapter, Split, TabularSchema
from .batch import IMAGE, MODALITIES, PATTERNS, TABULAR, Batch, Output

for _name in ["synthetic", "csv", "dvm", "mimic", "adni", "pad_ufes"]:
    try:
        import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{_name}":
            raise

__all__ = ["SPLITS", "DataInfo", "DatasetAdapter", "Split", "TabularSchema", "IMAGE", "MODALITIES",
           "PATTERNS", "TABULAR", "Batch", "Output"]

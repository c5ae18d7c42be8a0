"""Data: batch containers, adapters (one per dataset), registered by adapter name."""

from . import adni, csv, dvm, mimic, pad_ufes, synthetic  # noqa: F401,E402  (registration)
from .base import SPLITS, DataInfo, DatasetAdapter, Split, TabularSchema
from .batch import IMAGE, MODALITIES, PATTERNS, TABULAR, Batch, Output

__all__ = ["SPLITS", "DataInfo", "DatasetAdapter", "Split", "TabularSchema", "IMAGE", "MODALITIES",
           "PATTERNS", "TABULAR", "Batch", "Output"]

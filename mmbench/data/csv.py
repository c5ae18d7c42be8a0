"""Bring your own data (adapter ``csv``): one table row per sample plus image files.

A CSV (or parquet) file under ``<data root>/<dir>/`` holds an image-path column (relative to
``image_root``; PNG/JPEG, or NIfTI / ``.npy`` volumes with ``image_dims: 3``), a label column
(multi-class or binary; multi-label as several 0/1 ``label_columns`` or one column with a
``label_delimiter``), the categorical and continuous feature columns named in the card, and a
split rule: a ``split_column`` (values mapped by ``split_values``) or a seeded random split,
stratified by class, or by ``group_column`` (e.g. patient id) so no group spans two splits.

Natural missingness (counted in ``mmbench prepare`` and in every run record, never a crash): an
empty image path, a missing, 0-byte or unreadable image file -> image absent; empty feature cells
-> masked cells (all cells empty -> tabular absent). Rows with an empty label are dropped and counted.

A minimal card::

    name: my-data
    adapter: csv
    task: multiclass
    primary_metric: accuracy
    options: {dir: my-data, table: samples.csv, image_column: path, label_column: diagnosis,
              categorical: [sex, site], continuous: [age, size_mm], split_column: fold}
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ..registry import register_dataset
from .base import DataInfo
from .cache import CacheWriter, FileDataset
from .io import Progress, read_image, read_volume
from .options import CSVOptions
from .table import (
    check_splits,
    encode_features,
    encode_multiclass,
    encode_multilabel_columns,
    encode_multilabel_delimited,
    random_split,
    write_splits,
)


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (any delimiter pandas sniffs from ``,``/``;``/tab) or parquet file as strings-or-numbers."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
        return pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""], low_memory=False)
    except ImportError as exc:
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow): {exc}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(
            f"{path}: not a readable table ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None


def auto_features(df: pd.DataFrame, exclude: set[str]) -> tuple[list[str], list[str]]:
    """Columns not excluded: numeric ones continuous, the others categorical."""
    cat, num = [], []
    for col in df.columns:
        if col in exclude:
            continue
        (num if pd.api.types.is_numeric_dtype(df[col]) else cat).append(col)
    return cat, num


@register_dataset("csv")
class CSVDataset(FileDataset):
    """Bring-your-own image + table dataset from one CSV/parquet file (see the module docstring)."""

    Options = CSVOptions
    options: CSVOptions
    source = "your own files: see the csv adapter in docs/datasets.md"

    def table_path(self) -> Path:
        """The table file."""
        return self.dataset_dir() / self.options.table

    def fingerprint_inputs(self) -> tuple[list[Path], list[tuple[Path, tuple[str, ...]]]]:
        """The table, and the number of files under the image root."""
        o = self.options
        dirs = [(self.dataset_dir() / o.image_root, ())] if o.image_column else []
        return [self.table_path()], dirs

    def image_source(self) -> str:
        """The image column and the folder its paths are relative to."""
        return (
            f"column {self.options.image_column!r} of {self.table_path()} "
            f"(paths relative to {self.dataset_dir() / self.options.image_root})"
        )

    def expects_image(self) -> bool:
        """A card without ``image_column`` has no image modality."""
        return self.options.image_column is not None

    def check_layout(self) -> None:
        """The table exists and names every column the card uses."""
        self.require_file(self.table_path(), "options.table under options.dir")
        df = read_table(self.table_path())
        self.columns_check(df)

    def columns_check(self, df: pd.DataFrame) -> None:
        """Every column named in the options exists; feature lists do not overlap drop/label columns."""
        o = self.options
        named: list[tuple[str, str]] = [("categorical", c) for c in o.categorical]
        named += [("continuous", c) for c in o.continuous] + [("drop", c) for c in o.drop]
        named += [("label_columns", c) for c in o.label_columns]
        for opt in ("image_column", "label_column", "split_column", "group_column"):
            if getattr(o, opt):
                named.append((opt, getattr(o, opt)))
        cols = [str(c) for c in df.columns]
        for opt, col in named:
            if col not in cols:
                shown = ", ".join(cols[:30]) + (" ..." if len(cols) > 30 else "")
                raise DataError(
                    f"{self.table_path()}: column {col!r} named in options.{opt} not found (columns: {shown})"
                )
        feats = set(o.categorical) | set(o.continuous)
        clash = feats & (
            set(o.drop) | set(o.label_columns) | {o.label_column, o.image_column, o.split_column}
        )
        if clash:
            raise DataError(
                f"{self.table_path()}: column {sorted(clash)[0]!r} is both a feature and a "
                "dropped/label/image/split column"
            )
        if not o.label_columns and not o.label_column:
            raise DataError(
                f"{self.table_path()}: the card names no label: set options.label_column "
                "(or label_columns for multi-label)"
            )

    def labels(self, df: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...], np.ndarray, str]:
        """(y, class names, labelled rows, task)."""
        o = self.options
        where = str(self.table_path())
        if o.label_columns:
            y, names, ok = encode_multilabel_columns(df, o.label_columns, where)
            return y, names, ok, "multilabel"
        assert o.label_column is not None
        if o.label_delimiter:
            y, names, ok = encode_multilabel_delimited(
                df[o.label_column], o.label_delimiter, o.classes, where
            )
            return y, names, ok, "multilabel"
        y, names, ok = encode_multiclass(df[o.label_column], o.classes, where, o.missing_values)
        if len(names) < 2:
            raise DataError(
                f"{where}: label column {o.label_column!r} has {len(names)} class(es); need at least 2"
            )
        return y, names, ok, "binary" if len(names) == 2 else "multiclass"

    def split_ids(self, df: pd.DataFrame, y: np.ndarray, multilabel: bool) -> np.ndarray:
        """0/1/2 per row (-1: a split value the card does not map, dropped)."""
        o = self.options
        if o.split_column:
            values = df[o.split_column].astype("string").str.strip()
            mapping = {
                str(v): k
                for k, name in enumerate(("train", "val", "test"))
                for v in [o.split_values.get(name, name)]
            }
            return np.array([mapping.get(str(v), -1) for v in values], dtype=np.int8)
        groups = df[o.group_column].astype(str).to_numpy() if o.group_column else None
        strata = None if multilabel or groups is not None else y
        return random_split(len(df), o.split_fractions, o.split_seed, strata=strata, groups=groups)

    def image_reader(self) -> Any:
        """The reader of one image path."""
        o = self.options
        if o.image_dims == 3:
            return partial(read_volume, size=o.image_size)
        return partial(read_image, size=o.image_size, channels=o.image_channels, resize=o.resize)

    def image_shape(self) -> tuple[int, ...]:
        """``C x S x S`` or ``1 x S x S x S``."""
        o = self.options
        return (
            (1, o.image_size, o.image_size, o.image_size)
            if o.image_dims == 3
            else (o.image_channels, o.image_size, o.image_size)
        )

    def decode(self, writer: CacheWriter, progress: Progress) -> dict[str, Any]:
        """Read the table, encode labels/features, split, decode images into the cache."""
        o = self.options
        df = read_table(self.table_path())
        df.columns = [str(c) for c in df.columns]
        self.columns_check(df)
        y, names, labelled, task = self.labels(df)
        split_of = self.split_ids(df, y, task == "multilabel")
        keep = labelled & (split_of >= 0)
        notes = []
        if (~labelled).any():
            notes.append(f"{int((~labelled).sum())} row(s) without a label dropped")
        if (labelled & (split_of < 0)).any():
            notes.append(
                f"{int((labelled & (split_of < 0)).sum())} row(s) with a split value outside "
                f"{dict(o.split_values)} dropped"
            )
        df, y, split_of = df[keep].reset_index(drop=True), y[keep], split_of[keep]
        check_splits(split_of, str(self.table_path()))
        cat, num = list(o.categorical), list(o.continuous)
        if not cat and not num:
            exclude = (
                set(o.drop)
                | set(o.label_columns)
                | {o.label_column, o.image_column, o.split_column, o.group_column}
            )
            cat, num = auto_features(df, {c for c in exclude if c})
            notes.append(f"features inferred from column types: categorical {cat}, continuous {num}")
        table = encode_features(df, cat, num, split_of == 0, o.missing_values, str(self.table_path()))
        sources: list[str | None] | None = None
        if o.image_column:
            root = self.dataset_dir() / o.image_root
            raw = df[o.image_column]
            empty = raw.isna() | raw.astype("string").str.strip().eq("").fillna(True)
            sources = [None if e else str(root / str(p).strip()) for p, e in zip(raw, empty, strict=False)]
        groups = df[o.group_column].astype(str).to_numpy() if o.group_column else None
        meta = write_splits(
            writer,
            split_of=split_of,
            y=y,
            class_names=names,
            multilabel=task == "multilabel",
            image_sources=sources,
            image_reader=self.image_reader(),
            image_shape=self.image_shape(),
            modality_arrays=table.arrays,
            tabular_present=table.present,
            groups=groups,
            progress=progress,
            normalize=o.normalize if o.image_dims == 2 else "dataset",
        )
        info = DataInfo(
            name=Path(o.dir).name or "csv",
            task=task,
            num_classes=len(names),
            image_shape=self.image_shape(),
            tabular=table.schema,
            class_names=names,
            primary_metric="prauc" if task == "multilabel" else "accuracy",
        )
        return dict(meta, info=info, notes=notes)

"""ADNI (adapter ``adni``): 3-D T1 MRI + clinical table, CN / MCI / dementia, in DAFT's HDF5 layout.

DAFT (Wolf et al., NeuroImage 2022; ``ai-med/DAFT``) stores one HDF5 file per split; each image
is a group named by its image id with::

    <id>/<volume>          the volume (DAFT: ``Left-Hippocampus/vol_with_bg``, 64^3; any 3-D dataset)
    <id>/tabular           the clinical vector
    attrs RID (subject id), VISCODE (visit), DX ("CN" | "MCI" | "Dementia")
    stats/tabular/columns  the names of the tabular entries (mean/stddev are not needed)

Tabular entries named like ``C(X_MISSING)[T.1]`` (or containing ``X_MISSING``) are DAFT's
missing-value indicators: with ``missing_indicators: true`` they become cell masks of column ``X``
(the encoder's mask token) instead of features. Continuous entries are z-scored with the training
rows' observed cells. Volumes are resized trilinearly to ``image_size``^3 (DFPL: 128^3) and
min-max scaled per volume.

Splits: ``split: files`` uses the three files as given; ``split: subject`` pools them and re-splits
by ``RID`` (DFPL: a subject-level random split, 1,531 / 191 / 191 subjects). The generic ``csv``
adapter reads NIfTI volumes + a CSV instead (``datasets/adni-nifti.yaml``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ..registry import register_dataset
from .base import DataInfo, TabularSchema
from .cache import CacheWriter, FileDataset
from .io import Progress, require, volume_to_array
from .options import ADNIOptions
from .table import check_splits, random_split, write_splits

DX_CODES = {"CN": 0, "MCI": 1, "Dementia": 2, "AD": 2}
CLASS_NAMES = ("CN", "MCI", "Dementia")


def indicator_target(name: str) -> str | None:
    """``"C(ABETA_MISSING)[T.1]"`` / ``"ABETA_MISSING"`` -> ``"ABETA"``; other names -> None."""
    m = re.search(r"([A-Za-z0-9_.]+?)_MISSING", name)
    return m.group(1) if m else None


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@register_dataset("adni")
class ADNIDataset(FileDataset):
    """ADNI MRI + clinical table from DAFT-style HDF5 files (see the module docstring)."""

    Options = ADNIOptions
    options: ADNIOptions
    source = (
        "https://adni.loni.usc.edu (registration required); pack each split as an HDF5 file in the "
        "layout of github.com/ai-med/DAFT (README, 'Data'), or use datasets/adni-nifti.yaml"
    )

    def paths(self) -> list[Path]:
        """The three split files."""
        return [self.dataset_dir() / f for f in self.options.files]

    def fingerprint_inputs(self) -> tuple[list[Path], list[tuple[Path, tuple[str, ...]]]]:
        """The three HDF5 files (they hold the volumes too)."""
        return self.paths(), []

    def image_source(self) -> str:
        """The volume dataset inside each group."""
        return f"dataset {self.options.volume!r} of each image group in {[str(p) for p in self.paths()]}"

    def check_layout(self) -> None:
        """The three files exist and hold DAFT-style groups."""
        h5py = require("h5py", "reading ADNI HDF5 files")
        for p in self.paths():
            self.require_file(p, "one DAFT-layout HDF5 file per split, named in options.files")
            with h5py.File(p, "r") as hf:
                if "stats" not in hf or "tabular" not in hf["stats"] or "columns" not in hf["stats/tabular"]:
                    raise self.missing(f"the group stats/tabular/columns in {p}", "DAFT layout")
                ids = [k for k in hf.keys() if k != "stats"]
                if not ids:
                    raise self.missing(f"image groups in {p}")
                g = hf[ids[0]]
                if self.options.volume not in g or "tabular" not in g:
                    raise self.missing(
                        f"datasets {self.options.volume!r} and 'tabular' in group {ids[0]!r} of {p}",
                        "set options.volume to the dataset path inside each image group",
                    )

    def read_rows(self) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
        """Metadata rows (file index, group id, RID, VISCODE, DX), tabular matrix, column names."""
        h5py = require("h5py", "reading ADNI HDF5 files")
        rows, tab, columns = [], [], None
        for k, p in enumerate(self.paths()):
            with h5py.File(p, "r") as hf:
                cols = [_text(c) for c in hf["stats/tabular/columns"][:]]
                if columns is None:
                    columns = cols
                elif cols != columns:
                    raise DataError(
                        f"{p}: stats/tabular/columns differ from {self.paths()[0]}; all split files "
                        "must share one tabular layout"
                    )
                for gid, g in hf.items():
                    if gid == "stats":
                        continue
                    for attr in ("RID", "DX"):
                        if attr not in g.attrs:
                            raise self.missing(f"attribute {attr!r} on group {gid!r} of {p}", "DAFT layout")
                    dx = _text(g.attrs["DX"])
                    if dx not in DX_CODES:
                        raise DataError(
                            f"{p}: group {gid!r} has DX={dx!r}; expected one of {sorted(DX_CODES)}"
                        )
                    rows.append(
                        {
                            "file": k,
                            "id": gid,
                            "RID": _text(g.attrs["RID"]),
                            "VISCODE": _text(g.attrs.get("VISCODE", "")),
                            "DX": dx,
                        }
                    )
                    tab.append(np.asarray(g["tabular"][:], dtype=np.float64))
        assert columns is not None
        return pd.DataFrame(rows), np.stack(tab), columns

    def decode(self, writer: CacheWriter, progress: Progress) -> dict[str, Any]:
        """Read every group, build the table modality, split, decode volumes."""
        o = self.options
        df, tab, columns = self.read_rows()
        y = df["DX"].map(DX_CODES).to_numpy(dtype=np.int64)
        groups = df["RID"].to_numpy()
        if o.split == "files":
            split_of = df["file"].to_numpy().astype(np.int8)
        else:
            split_of = random_split(len(df), o.split_fractions, o.split_seed, groups=groups)
        check_splits(split_of, str(self.dataset_dir()))
        feature_idx = list(range(len(columns)))
        mask = np.isfinite(tab)
        notes = []
        if o.missing_indicators:
            indicators = {i: indicator_target(c) for i, c in enumerate(columns) if indicator_target(c)}
            by_name = {c: i for i, c in enumerate(columns)}
            for i, target in indicators.items():
                if target in by_name:
                    mask[:, by_name[target]] &= tab[:, i] < 0.5
            feature_idx = [i for i in feature_idx if i not in indicators]
            if indicators:
                notes.append(f"{len(indicators)} missing-indicator column(s) turned into cell masks")
        num = np.where(mask, tab, 0.0)[:, feature_idx]
        num_mask = mask[:, feature_idx]
        fit = split_of == 0
        for j in range(num.shape[1]):
            obs = num_mask[:, j]
            sel = obs & fit
            mean = num[sel, j].mean() if sel.any() else 0.0
            std = num[sel, j].std() if sel.sum() > 1 else 1.0
            num[obs, j] = (num[obs, j] - mean) / (std if std > 1e-12 else 1.0)
        arrays = {"tabular.num": num.astype(np.float32)}
        if not num_mask.all():
            arrays["tabular.num_mask"] = num_mask
        names = tuple(columns[i] for i in feature_idx)
        schema = TabularSchema(cat_cardinalities=(), n_num=len(names), num_names=names)
        shape = (1, o.image_size, o.image_size, o.image_size)
        h5py = require("h5py", "reading ADNI HDF5 files")
        handles = [h5py.File(p, "r") for p in self.paths()]
        try:

            def reader(key: tuple[int, str]) -> np.ndarray | None:
                f, gid = key
                try:
                    return volume_to_array(handles[f][gid][o.volume][()], o.image_size)
                except (KeyError, ValueError, OSError):
                    return None

            sources = list(zip(df["file"].tolist(), df["id"].tolist(), strict=False))
            out = write_splits(
                writer,
                split_of=split_of,
                y=y,
                class_names=CLASS_NAMES,
                multilabel=False,
                image_sources=sources,
                image_reader=reader,
                image_shape=shape,
                modality_arrays=arrays,
                tabular_present=num_mask.any(axis=1),
                groups=groups,
                progress=progress,
                normalize="dataset",
                describe_source=lambda key: f"{o.files[key[0]]}:{key[1]}/{o.volume}",
            )
        finally:
            for h in handles:
                h.close()
        info = DataInfo(
            name="adni",
            task="multiclass",
            num_classes=3,
            image_shape=shape,
            tabular=schema,
            class_names=CLASS_NAMES,
            primary_metric="accuracy",
        )
        return dict(out, info=info, notes=notes)

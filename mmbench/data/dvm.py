"""DVM-CAR (adapter ``dvm``): car-advert photos + 17 tabular attributes, car-model classification.

Reads the files that TIP's preprocessing (``siyi-wind/TIP``, ``data/create_dvm_dataset.ipynb``,
derived from MMCL) writes to ``<data root>/<dir>/features/``:

* ``dvm_features_{split}_noOH_all_views_physical_jittered_50_reordered.csv`` (no header, 17 columns:
  ``Color, Bodytype, Gearbox, Fuel_type`` as category codes, then 13 z-scored continuous columns);
* ``labels_model_all_{split}_all_views.pt`` (list of ints) and ``{split}_paths_all_views.pt``
  (image paths; re-rooted under ``<dir>/resized_DVM/`` when they point elsewhere);
* ``tabular_lengths_all_views_physical_reordered.pt`` (cardinalities; 1 for continuous columns).

MMCL's notebook stops one step earlier: ``..._physical_jittered_50.csv`` with
``tabular_lengths_all_views_physical.pt``, continuous columns first. Those files are read too (by
default when the ``_reordered`` ones are absent): the columns are put categorical-first by TIP's
own rule (columns of cardinality > 1 first, each group in file order), which gives exactly TIP's
``_reordered`` files.

With only the raw release (``tables_V2.0/`` + ``resized_DVM/``), ``mmbench prepare dvm`` first
performs TIP's documented joins, filters and splits (:func:`build_features`) and writes those files,
plus ``mmbench_build.json`` recording the build settings (a later card with other settings rebuilds
them). The four physical attributes are z-scored with the training split's mean and standard
deviation (``physical_scaling: train``, the default); TIP z-scores each split with its own
statistics (``physical_scaling: split``), so its test rows use test statistics. TIP's own
``features/`` files are always per split, whatever the option (``prepare`` says so).
Images are resized to 128 x 128 (TIP). There is no natural missingness: every advert has both.
"""

from __future__ import annotations

import json
import logging
import random
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import DataError
from ..registry import register_dataset
from .base import SPLITS, DataInfo, TabularSchema
from .cache import CacheWriter, FileDataset, split_report
from .io import ChannelStats, Progress, decode_into, read_image
from .options import DVMOptions
from .table import image_stats

CATEGORICAL = ("Color", "Bodytype", "Gearbox", "Fuel_type")
BASE_CONTINUOUS = (
    "Adv_year",
    "Adv_month",
    "Reg_year",
    "Runned_Miles",
    "Price",
    "Seat_num",
    "Door_num",
    "Entry_price",
    "Engine_size",
)
PHYSICAL = ("Wheelbase", "Length", "Width", "Height")  # TIP's jitter order
CONTINUOUS = ("Wheelbase", "Height", "Width", "Length", *BASE_CONTINUOUS)  # column order of the table
#: written next to the features files that mmbench builds: the settings they were built with
BUILD_MARKER = "mmbench_build.json"
RAW_TABLES = ("Ad_table.csv", "Image_table.csv", "Price_table.csv", "Ad_table (extra).csv")
log = logging.getLogger("mmbench.data")


def features_files(o: DVMOptions, split: str, tabular_version: str | None = None,
                   feats: Path | None = None) -> tuple[str, str, str]:
    """(features CSV, labels .pt, paths .pt) file names of one split. Given the ``features/`` folder,
    the paths file falls back to MMCL's ``{split}_paths_{views}_<machine>.pt`` (MMCL's notebook writes
    ``_server`` / ``_tower`` variants) when TIP's plain name is absent and exactly one variant exists."""
    paths = f"{split}_paths_{o.views}.pt"
    if feats is not None and not (feats / paths).is_file():
        variants = sorted(p.name for p in feats.glob(f"{split}_paths_{o.views}_*.pt"))
        if len(variants) == 1:
            paths = variants[0]
    return (
        f"dvm_features_{split}_noOH_{o.views}_{tabular_version or o.tabular_version}.csv",
        f"labels_model_all_{split}_{o.views}.pt",
        paths,
    )


def build_settings(o: DVMOptions) -> dict[str, Any]:
    """The options a raw build depends on (stored in :data:`BUILD_MARKER`)."""
    return {"min_adverts": o.min_adverts, "seed": o.seed, "physical_scaling": o.physical_scaling,
            "image_dir": o.image_dir}


def categorical_first(lengths: list[int]) -> list[int]:
    """TIP's reordering (``create_dvm_dataset.ipynb``): columns of cardinality > 1, then the others,
    each group in file order. The identity for TIP's ``_reordered`` files."""
    return [j for j, v in enumerate(lengths) if v > 1] + [j for j, v in enumerate(lengths) if v <= 1]


def scale_physical(parts: dict[str, pd.DataFrame], mode: str) -> None:
    """z-score the physical columns of every split in place, with the training split's mean and sample
    std (``"train"``) or each split's own (``"split"``, TIP); a zero or undefined std counts as 1."""
    attrs = ("Wheelbase", "Height", "Width", "Length")
    ref = {a: (parts["train"][a].mean(), parts["train"][a].std()) for a in attrs}
    for df in parts.values():
        for a in attrs:
            mean, std = ref[a] if mode == "train" else (df[a].mean(), df[a].std())
            std = std if np.isfinite(std) and std > 0 else 1.0
            df[a] = (df[a] - mean) / std


def image_path(base: Path, image_dir: str, image_name: str) -> Path:
    """``<base>/<image_dir>/<f0>/<f1>/<f2>/<f3>/<name>`` with f0..f3 the first ``$$`` fields of the name."""
    parts = image_name.split("$$")
    return base.joinpath(image_dir, *parts[:4], image_name)


def _torch_list(path: Path) -> list:
    try:
        return list(torch.load(path, weights_only=True))
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a malformed file
        raise DataError(f"{path}: not a readable torch list ({type(exc).__name__})") from None


def _strip_columns(df: pd.DataFrame) -> pd.DataFrame:
    df.columns = [str(c).strip() for c in df.columns]
    return df


def build_features(base: Path, o: DVMOptions, progress: Progress | None = None) -> list[str]:
    """Reproduce TIP's DVM preprocessing from ``tables_V2.0/`` and write ``features/`` (all views).

    Steps (TIP notebook): one image per advert (first row per ``Adv_ID`` = first two ``$$`` fields of
    ``Image_ID``); adverts joined with the price table on (Genmodel_ID, Reg_year = Year); rows with
    NA dropped; ``Engine_size`` = ``Engin_size`` without its last character; the 9 base continuous
    columns z-scored over the whole filtered table (TIP's mild leak, kept for comparability);
    categories coded; models with < ``min_adverts`` adverts dropped and labels renumbered in order
    of appearance; 50 % test then 20 % of the rest for validation, both stratified by model with
    ``random_state=seed``; physical dimensions from ``Ad_table (extra).csv`` (gaps filled from
    another advert of the same model, TIP's two manual wheelbase fixes, uniform integer jitter
    +-50 from ``random.seed(seed)``), z-scored by :func:`scale_physical` (``physical_scaling``).
    Writes :data:`BUILD_MARKER` with :func:`build_settings`. Returns notes.
    """
    from sklearn.model_selection import train_test_split

    tables = base / "tables_V2.0"
    feats = base / o.features_dir
    ad = _strip_columns(pd.read_csv(tables / "Ad_table.csv", low_memory=False))
    img = _strip_columns(pd.read_csv(tables / "Image_table.csv", low_memory=False))
    price = _strip_columns(pd.read_csv(tables / "Price_table.csv", low_memory=False))
    img["Adv_ID"] = img["Image_ID"].astype(str).str.split("$$", regex=False).str[:2].str.join("$$")
    img = img.drop_duplicates(subset=["Adv_ID"])
    df = ad.merge(
        price[["Genmodel_ID", "Entry_price", "Year"]],
        left_on=["Genmodel_ID", "Reg_year"],
        right_on=["Genmodel_ID", "Year"],
    )
    df = df.merge(img[["Adv_ID", "Image_name", "Predicted_viewpoint"]], on="Adv_ID")
    if not df["Adv_ID"].is_unique:
        raise DataError(f"{tables}: Adv_ID is not unique after joining Ad_table, Price_table and Image_table")
    df = df.dropna()
    df["Engine_size"] = df["Engin_size"].astype(str).str[:-1].astype(float)
    df = df.drop(columns=["Engin_size"])
    cont = df.loc[:, list(BASE_CONTINUOUS)].copy()
    for c in ("Runned_Miles", "Price"):
        cont[c] = pd.to_numeric(cont[c], errors="coerce")
    cont = cont.astype(float)
    cont = (cont - cont.mean()) / cont.std().replace(0.0, 1.0)  # a constant column stays finite
    cat = df.loc[:, [*CATEGORICAL, "Genmodel_ID"]].copy()
    for c in cat.columns:
        cat[c] = cat[c].astype("category").cat.codes
    data = pd.concat([df[["Adv_ID"]], cont, cat, df[["Image_name", "Predicted_viewpoint"]]], axis=1).dropna()
    counts = data["Genmodel_ID"].value_counts()
    populated = set(counts[counts >= o.min_adverts].index)
    data = data[data["Genmodel_ID"].isin(populated)].copy()
    mapping = {v: i for i, v in enumerate(data["Genmodel_ID"].unique())}
    data["Genmodel_ID"] = data["Genmodel_ID"].map(mapping)
    if data["Genmodel_ID"].nunique() < 2:
        raise DataError(f"{tables}: fewer than 2 car models with >= {o.min_adverts} adverts after filtering")
    ids = list(data["Adv_ID"])
    trainval, test_ids = train_test_split(
        ids, test_size=0.5, random_state=o.seed, stratify=data["Genmodel_ID"]
    )
    # TIP passes the strata in table order, not in the order of `trainval`; kept to reproduce its split.
    strata = data[data["Adv_ID"].isin(trainval)]["Genmodel_ID"]
    train_ids, val_ids = train_test_split(trainval, test_size=0.2, random_state=o.seed, stratify=strata)
    physical = _strip_columns(pd.read_csv(tables / "Ad_table (extra).csv", low_memory=False))
    physical.loc[physical["Genmodel_ID"] == "69_36", "Wheelbase"] = 2612  # Peugeot RCZ (TIP fix)
    physical.loc[physical["Genmodel_ID"] == "29_20", "Wheelbase"] = 2788  # Ford Grand C-Max (TIP fix)
    for attr in ("Wheelbase", "Length", "Width", "Height"):
        vals = pd.to_numeric(physical[attr], errors="coerce")
        good = vals.notna() & (vals > 0)
        first = vals[good].groupby(physical.loc[good, "Genmodel_ID"]).first()
        fill = physical["Genmodel_ID"].map(first)
        physical[attr] = vals.where(good, fill)
    rng = random.Random(o.seed)
    for attr in PHYSICAL:
        physical[attr] = [v + rng.randint(-50, 50) for v in physical[attr]]
    physical = physical[["Adv_ID", "Wheelbase", "Height", "Width", "Length"]]
    feats.mkdir(parents=True, exist_ok=True)
    lengths_cat = [int(data[c].max()) + 1 for c in CATEGORICAL]
    notes = []
    parts: dict[str, pd.DataFrame] = {}
    for split, split_ids in zip(SPLITS, (train_ids, val_ids, test_ids), strict=False):
        part = data.set_index("Adv_ID").loc[split_ids].reset_index()
        merged = part.merge(physical, on="Adv_ID", how="inner")
        if len(merged) != len(part):
            raise DataError(
                f"{tables / 'Ad_table (extra).csv'}: {len(part) - len(merged)} {split} advert(s) have "
                "no physical attributes (Wheelbase/Height/Width/Length)"
            )
        for attr in ("Wheelbase", "Height", "Width", "Length"):
            if merged[attr].isna().any():
                raise DataError(
                    f"{tables / 'Ad_table (extra).csv'}: {attr} is missing for a model with no "
                    "other advert to fill it from"
                )
        parts[split] = merged
    scale_physical(parts, o.physical_scaling)
    for split, merged in parts.items():
        out = merged[list(CATEGORICAL) + list(CONTINUOUS)]
        csv_name, labels_name, paths_name = features_files(o, split)
        out.to_csv(feats / csv_name, index=False, header=False)
        torch.save([int(v) for v in merged["Genmodel_ID"]], feats / labels_name)
        torch.save([str(image_path(base, o.image_dir, n)) for n in merged["Image_name"]], feats / paths_name)
        notes.append(f"{split}: {len(merged)} adverts")
    torch.save(lengths_cat + [1] * len(CONTINUOUS), feats / o.lengths_file)
    (feats / BUILD_MARKER).write_text(json.dumps(build_settings(o), sort_keys=True))
    notes.append(
        f"built features/ from tables_V2.0 ({len(mapping)} car models with >= {o.min_adverts} adverts, "
        f"physical attributes z-scored {'with training statistics' if o.physical_scaling == 'train' else 'per split'})"
    )
    return notes


@register_dataset("dvm")
class DVMDataset(FileDataset):
    """DVM-CAR as preprocessed by TIP or MMCL (see the module docstring)."""

    Options = DVMOptions
    options: DVMOptions
    #: 2: MMCL's column order accepted; physical attributes of a raw build scaled with training statistics
    version = 2
    source = (
        "https://deepvisualmarketing.github.io (DVM-CAR: tables_V2.0 and resized_DVM), then TIP's "
        "data/create_dvm_dataset.ipynb (github.com/siyi-wind/TIP) or `mmbench prepare dvm`"
    )

    def features(self) -> Path:
        """The ``features/`` folder."""
        return self.dataset_dir() / self.options.features_dir

    def _complete(self, tabular_version: str, lengths_file: str) -> bool:
        feats = self.features()
        return (
            all((feats / f).is_file() for s in SPLITS for f in features_files(self.options, s, tabular_version, feats))
            and (feats / lengths_file).is_file()
        )

    def variant(self) -> tuple[str, str]:
        """(tabular_version, lengths_file) to read: the card's, or MMCL's un-reordered files when only
        those exist (``..._reordered`` -> ``...``)."""
        o = self.options
        mine = (o.tabular_version, o.lengths_file)
        alt = (o.tabular_version.replace("_reordered", ""), o.lengths_file.replace("_reordered", ""))
        if alt != mine and not self._complete(*mine) and self._complete(*alt):
            return alt
        return mine

    def has_features(self) -> bool:
        """Whether TIP's (or MMCL's) ``features/`` files are present."""
        return self._complete(*self.variant())

    def has_raw(self) -> bool:
        """Whether the raw release (tables + images) is present."""
        t = self.dataset_dir() / "tables_V2.0"
        return all((t / f).is_file() for f in RAW_TABLES)

    def built_with(self) -> dict[str, Any] | None:
        """The settings mmbench built ``features/`` with (None: not built by mmbench, e.g. TIP's files)."""
        try:
            return json.loads((self.features() / BUILD_MARKER).read_text())
        except (OSError, ValueError):
            return None

    def fingerprint_inputs(self) -> tuple[list[Path], list[tuple[Path, tuple[str, ...]]]]:
        """The features files (TIP's and MMCL's names), the build marker, the raw tables, and the number
        of files under ``resized_DVM/``."""
        o, feats = self.options, self.features()
        files: list[Path] = []
        versions = dict.fromkeys([(o.tabular_version, o.lengths_file),
                                  (o.tabular_version.replace("_reordered", ""),
                                   o.lengths_file.replace("_reordered", ""))])
        for version, lengths in versions:
            files += [feats / f for s in SPLITS for f in features_files(o, s, version, feats)] + [feats / lengths]
        files = list(dict.fromkeys(files)) + [feats / BUILD_MARKER]
        files += [self.dataset_dir() / "tables_V2.0" / f for f in RAW_TABLES]
        return files, [(self.dataset_dir() / o.image_dir, ())]

    def image_source(self) -> str:
        """The paths lists and the image folder they are re-rooted under."""
        return (
            f"the image paths of {self.features() / features_files(self.options, 'train')[2]} and the other "
            f"splits (re-rooted under {self.dataset_dir() / self.options.image_dir} when not found)"
        )

    def check_layout(self) -> None:
        """TIP's ``features/`` files, or the raw ``tables_V2.0/`` they are built from."""
        if self.has_features() or self.has_raw():
            return
        feats = self.features()
        for s in SPLITS:
            for f in features_files(self.options, s):
                if not (feats / f).is_file():
                    raise self.missing(
                        feats / f,
                        "TIP preprocessing output, or tables_V2.0/ with Ad_table.csv, "
                        "Image_table.csv, Price_table.csv and 'Ad_table (extra).csv'",
                    )
        raise self.missing(feats / self.options.lengths_file)

    def resolve_image(self, p: str) -> str:
        """A path from the ``.pt`` list, re-rooted under ``<dir>/<image_dir>`` when it does not exist."""
        path = Path(p)
        if path.is_file():
            return str(path)
        marker = f"{self.options.image_dir}/"
        text = str(p).replace("\\", "/")
        if marker in text:
            return str(self.dataset_dir() / self.options.image_dir / text.split(marker, 1)[1])
        return str(image_path(self.dataset_dir(), self.options.image_dir, path.name))

    def ensure_features(self, progress: Progress) -> list[str]:
        """Build ``features/`` from the raw tables when absent or built with other settings; notes."""
        o = self.options
        built, wanted = self.built_with(), build_settings(o)
        if not self.has_features():
            return build_features(self.dataset_dir(), o, progress)
        if built is not None and built != wanted:
            diff = ", ".join(f"{k}: {built.get(k)} -> {v}" for k, v in wanted.items() if built.get(k) != v)
            if not self.has_raw():
                raise DataError(
                    f"{self.features()}: built by mmbench with other settings ({diff}) and tables_V2.0/ is "
                    "absent to rebuild them; set the card's options back or restore the raw tables"
                )
            return [f"features/ rebuilt ({diff})", *build_features(self.dataset_dir(), o, progress)]
        if built is None and o.physical_scaling == "train":
            note = (
                f"{self.features()} holds TIP's/MMCL's own files: their physical attributes are z-scored per "
                "split (physical_scaling: train applies only when mmbench builds features/ from tables_V2.0; "
                "move features/ away to rebuild)"
            )
            log.warning("dvm: %s", note)
            return [note]
        return []

    def decode(self, writer: CacheWriter, progress: Progress) -> dict[str, Any]:
        """Read TIP's files (building them from the raw tables first if needed) and decode the images."""
        o = self.options
        notes = self.ensure_features(progress)
        feats = self.features()
        tabular_version, lengths_file = self.variant()
        raw_lengths = [int(v) for v in _torch_list(feats / lengths_file)]
        order = categorical_first(raw_lengths)
        if order != list(range(len(raw_lengths))):
            notes.append(
                f"{lengths_file}: columns put categorical-first by TIP's rule (MMCL's column order)"
            )
        lengths = [raw_lengths[j] for j in order]
        n_cat = sum(1 for v in lengths if v > 1)
        n_cols = len(lengths)
        names = (
            (CATEGORICAL + CONTINUOUS)
            if n_cols == 17 and n_cat == 4
            else tuple(f"col{j}" for j in range(n_cols))
        )
        schema = TabularSchema(
            cat_cardinalities=tuple(lengths[:n_cat]),
            n_num=n_cols - n_cat,
            cat_names=names[:n_cat],
            num_names=names[n_cat:],
        )
        shape = (3, o.image_size, o.image_size)
        report: dict[str, Any] = {}
        raw: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
        num_classes = 0
        for split in SPLITS:
            csv_name, labels_name, paths_name = features_files(o, split, tabular_version, feats)
            table = pd.read_csv(feats / csv_name, header=None)
            labels = np.asarray(_torch_list(feats / labels_name), dtype=np.int64)
            paths = [str(p) for p in _torch_list(feats / paths_name)]
            if table.shape[1] != n_cols or not (len(table) == len(labels) == len(paths)):
                raise DataError(
                    f"{feats / csv_name}: {table.shape[0]} rows x {table.shape[1]} columns, "
                    f"{len(labels)} labels and {len(paths)} paths; expected equal counts and "
                    f"{n_cols} columns ({lengths_file})"
                )
            raw[split] = (table.iloc[:, order].to_numpy(dtype=np.float64), labels, paths)
            num_classes = max(num_classes, int(labels.max()) + 1 if len(labels) else 0)
        stats = ChannelStats(3)
        class_names = tuple(str(k) for k in range(num_classes))
        for split in SPLITS:
            values, labels, paths = raw[split]
            codes = values[:, :n_cat]
            cat = codes.astype(np.int64)
            where = f"{feats / features_files(o, split, tabular_version)[0]}"
            if (codes != cat).any() or (cat < 0).any() or (cat >= np.asarray(lengths[:n_cat])).any():
                raise DataError(f"{where}: a categorical code is not an integer in 0..n-1 of {lengths_file}")
            writer.put(split, "tabular.cat", cat)
            writer.put(split, "tabular.num", values[:, n_cat:].astype(np.float32))
            pixels = writer.empty(split, "image.pixels", (len(labels), *shape), np.uint8)
            sources = [self.resolve_image(p) for p in paths]
            ok = decode_into(
                pixels,
                sources,
                partial(read_image, size=o.image_size, channels=3, resize="stretch"),
                progress,
                description=f"{split}: decoding images",
                stats=stats if split == "train" else None,
            )
            writer.missing.record(split, sources, ok)
            pixels.flush()
            del pixels
            present = np.stack([ok, np.ones(len(labels), dtype=bool)], axis=1)
            writer.put(split, "y", labels)
            writer.put(split, "natural_present", present)
            report[split] = split_report(labels, present, class_names, False)
        mean, std = image_stats("imagenet", 3, stats)
        info = DataInfo(
            name="dvm",
            task="multiclass",
            num_classes=num_classes,
            image_shape=shape,
            tabular=schema,
            class_names=class_names,
            primary_metric="accuracy",
        )
        return {"info": info, "report": report, "image_mean": mean, "image_std": std, "notes": notes}

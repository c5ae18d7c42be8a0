"""PAD-UFES-20 (adapter ``pad_ufes``): smartphone skin-lesion photos + patient/lesion metadata.

Layout of the official download (Pacheco et al., Data in Brief 2020; CC BY 4.0)::

    <data root>/<dir>/metadata.csv                 26 columns, one row per image
    <data root>/<dir>/images/imgs_part_{1,2,3}/PAT_<patient>_<lesion>_<n>.png

Label: ``diagnostic`` (ACK, BCC, MEL, NEV, SCC, SEK). Features: the 21 clinical fields below
(``biopsed`` is dropped by default: every SCC/BCC/MEL lesion is biopsied, so it leaks the label).
Empty cells and ``UNK`` are missing cells (many patients have only part of the questionnaire).
Splits are by ``patient_id`` (a patient's lesions never span two splits), seeded.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ..registry import register_dataset
from .base import DataInfo
from .cache import CacheWriter, FileDataset
from .csv import read_table
from .io import Progress, read_image
from .options import PADUFESOptions
from .table import check_splits, encode_features, encode_multiclass, random_split, write_splits

CLASSES = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
CATEGORICAL = (
    "smoke",
    "drink",
    "background_father",
    "background_mother",
    "pesticide",
    "gender",
    "skin_cancer_history",
    "cancer_history",
    "has_piped_water",
    "has_sewage_system",
    "fitspatrick",
    "region",
    "itch",
    "grew",
    "hurt",
    "changed",
    "bleed",
    "elevation",
)
CONTINUOUS = ("age", "diameter_1", "diameter_2")
IDS = ("patient_id", "lesion_id", "img_id", "diagnostic")


@register_dataset("pad_ufes")
class PADUFESDataset(FileDataset):
    """PAD-UFES-20: 2,298 images of 1,641 lesions from 1,373 patients, 6 diagnoses."""

    Options = PADUFESOptions
    options: PADUFESOptions
    source = (
        "https://data.mendeley.com/datasets/zr7vgbcyr2/1 (PAD-UFES-20, CC BY 4.0): unzip so that "
        "metadata.csv and images/imgs_part_1..3/ lie in the dataset folder"
    )

    def check_layout(self) -> None:
        """``metadata.csv`` with the official columns and an ``images/`` folder."""
        d = self.dataset_dir()
        meta = self.require_file(d / "metadata.csv")
        self.require_dir(d / "images", "holding imgs_part_1, imgs_part_2, imgs_part_3")
        df = read_table(meta)
        needed = set(IDS) | set(CATEGORICAL) | set(CONTINUOUS)
        lacking = sorted(needed - set(map(str, df.columns)))
        if lacking:
            raise self.missing(
                f"column(s) {lacking} in {meta}", "is this the official PAD-UFES-20 metadata.csv?"
            )

    def fingerprint_inputs(self) -> tuple[list[Path], list[tuple[Path, tuple[str, ...]]]]:
        """``metadata.csv``, and the number of files under ``images/``."""
        d = self.dataset_dir()
        return [d / "metadata.csv"], [(d / "images", ())]

    def image_source(self) -> str:
        """The ``img_id`` column and the image folder."""
        d = self.dataset_dir()
        return f"column 'img_id' of {d / 'metadata.csv'} (files found under {d / 'images'})"

    def image_index(self) -> dict[str, Path]:
        """``img_id`` -> file, over ``images/`` and its ``imgs_part_*`` sub-folders."""
        index: dict[str, Path] = {}
        for p in sorted((self.dataset_dir() / "images").rglob("*")):
            if p.is_file():
                index.setdefault(p.name, p)
        return index

    def decode(self, writer: CacheWriter, progress: Progress) -> dict[str, Any]:
        """Encode metadata, split by patient, decode the photos."""
        o = self.options
        meta_path = self.dataset_dir() / "metadata.csv"
        df = read_table(meta_path)
        df.columns = [str(c) for c in df.columns]
        y, names, labelled = encode_multiclass(df["diagnostic"], CLASSES, str(meta_path))
        df, y = df[labelled].reset_index(drop=True), y[labelled]
        groups = df["patient_id"].astype(str).to_numpy()
        split_of = random_split(len(df), o.split_fractions, o.split_seed, groups=groups)
        check_splits(split_of, str(meta_path))
        categorical = list(CATEGORICAL) + (
            [] if o.drop_biopsed or "biopsed" not in df.columns else ["biopsed"]
        )
        table = encode_features(df, categorical, list(CONTINUOUS), split_of == 0, where=str(meta_path))
        index = self.image_index()
        sources = [str(index[str(i)]) if str(i) in index else None for i in df["img_id"]]
        notes = (
            [
                f"{sum(s is None for s in sources)} image file(s) listed in metadata.csv not found "
                "(image naturally absent)"
            ]
            if any(s is None for s in sources)
            else []
        )
        shape = (3, o.image_size, o.image_size)
        out = write_splits(
            writer,
            split_of=split_of,
            y=y,
            class_names=names,
            multilabel=False,
            image_sources=sources,
            image_reader=partial(read_image, size=o.image_size, channels=3, resize=o.resize),
            image_shape=shape,
            modality_arrays=table.arrays,
            tabular_present=table.present,
            groups=groups,
            progress=progress,
            normalize="imagenet",
        )
        info = DataInfo(
            name="pad-ufes-20",
            task="multiclass",
            num_classes=len(names),
            image_shape=shape,
            tabular=table.schema,
            class_names=names,
            primary_metric="macro_f1",
        )
        missing_cells = int(sum((~m).sum() for k, m in table.arrays.items() if k.endswith("_mask")))
        notes.append(f"{missing_cells} empty/UNK metadata cells (masked cells)")
        return dict(out, info=info, notes=notes)


__all__ = ["PADUFESDataset", "PADUFESOptions", "CLASSES", "CATEGORICAL", "CONTINUOUS"]

"""Options of the built-in dataset adapters (the ``options:`` block of a dataset card), torch-free.

Each adapter (``mmbench/data/<adapter>.py``) takes its options from here, so a card is validated by
``mmbench validate`` without importing torch. Field constraints state the ranges; a bad value is one
line naming the card and the key.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from pydantic import Field

from ..errors import ConfigError
from ..typed import Bool, Float, Fraction, Int, NonNegInt, PosFloat, PosInt, config

#: Cell values read as missing (compared case-insensitively after stripping).
MISSING_VALUES: tuple[str, ...] = ("", "na", "n/a", "nan", "none", "null", "unk", "unknown", "?")

#: Train / val / test fractions of a random split (they must sum to 1).
Fractions = tuple[Fraction, Fraction, Fraction]
ImageSize = Annotated[int, Field(ge=4, le=4096, strict=True)]


def check_fractions(fractions: tuple[float, float, float]) -> None:
    """``split_fractions`` must sum to 1 (within rounding)."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"split_fractions must sum to 1, got {list(fractions)} (sum {sum(fractions):g})")


@config
class SyntheticOptions:
    """Options of the synthetic dataset card (see :mod:`mmbench.data.synthetic`); ``seed: run`` means the
    run's seed (bound by :func:`mmbench.data.suite_options.bind_run_seed`)."""

    n_samples: Annotated[int, Field(ge=10, strict=True)] = 4000
    image_size: ImageSize = 32
    seed: NonNegInt | Literal["run"] = 0
    noise_shared_image: PosFloat = 0.5
    noise_shared_tabular: PosFloat = 0.5
    noise_image: PosFloat = 0.3
    noise_tabular: PosFloat = 0.3
    pixel_noise: Annotated[Float, Field(ge=0)] = 0.05
    n_nuisance_num: NonNegInt = 3
    split_fractions: Fractions = (0.6, 0.2, 0.2)

    def __post_init__(self) -> None:
        check_fractions(self.split_fractions)


@config
class CSVOptions:
    """Options of a bring-your-own dataset card (paths are relative to ``<data root>/<dir>``)."""

    dir: str = "csv"
    table: str = "data.csv"
    image_column: str | None = "image"
    image_root: str = ""
    image_dims: Literal[2, 3] = 2
    image_size: ImageSize = 224
    image_channels: Literal[1, 3] = 3
    resize: Literal["stretch", "crop"] = "stretch"
    normalize: Literal["imagenet", "dataset", "unit"] = "imagenet"
    label_column: str | None = "label"
    label_columns: tuple[str, ...] = ()
    label_delimiter: str | None = None
    classes: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    continuous: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    split_column: str | None = None
    split_values: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"train": "train", "val": "val", "test": "test"}
    )
    split_fractions: Fractions = (0.7, 0.1, 0.2)
    split_seed: NonNegInt = 0
    group_column: str | None = None
    missing_values: tuple[str, ...] = MISSING_VALUES

    def __post_init__(self) -> None:
        check_fractions(self.split_fractions)


@config
class DVMOptions:
    """Options of the DVM-CAR card."""

    dir: str = "dvm"
    features_dir: str = "features"
    image_dir: str = "resized_DVM"
    views: str = "all_views"
    tabular_version: str = "physical_jittered_50_reordered"
    lengths_file: str = "tabular_lengths_all_views_physical_reordered.pt"
    image_size: ImageSize = 128
    min_adverts: PosInt = 100  # raw build only: car models with fewer adverts are dropped (TIP: 100)
    seed: Int = 2022  # raw build only: split and jitter seed (TIP: 2022)
    # raw build only: z-score the physical attributes with training statistics, or per split (TIP)
    physical_scaling: Literal["train", "split"] = "train"


@config
class MIMICOptions:
    """Options of the MIMIC-IV + MIMIC-CXR card."""

    dir: str = "mimic"
    ehr_dir: str = "ehr"
    task_dir: str = "phenotyping"
    cxr_dir: str = "cxr"
    cxr_images: str = "resized"
    cohort: Literal["partial", "paired"] = "partial"
    hours: PosFloat = 48.0
    timestep: PosFloat = 1.0
    cxr_window_hours: PosFloat | None = 48.0
    view_positions: tuple[str, ...] = ("AP",)
    normalizer: str | None = None
    clip: PosFloat = 10.0
    image_size: ImageSize = 224
    resize: Literal["stretch", "crop"] = "crop"


@config
class ADNIOptions:
    """Options of the ADNI (DAFT HDF5) card."""

    dir: str = "adni"
    files: tuple[str, str, str] = ("0-train.h5", "0-valid.h5", "0-test.h5")
    volume: str = "Left-Hippocampus/vol_with_bg"
    image_size: ImageSize = 128
    split: Literal["files", "subject"] = "files"
    split_fractions: Fractions = (0.8, 0.1, 0.1)
    split_seed: NonNegInt = 0
    missing_indicators: Bool = True

    def __post_init__(self) -> None:
        check_fractions(self.split_fractions)


@config
class PADUFESOptions:
    """Options of the PAD-UFES-20 card."""

    dir: str = "pad-ufes-20"
    image_size: ImageSize = 224
    resize: Literal["stretch", "crop"] = "stretch"
    drop_biopsed: Bool = True
    split_fractions: Fractions = (0.7, 0.1, 0.2)
    split_seed: NonNegInt = 0

    def __post_init__(self) -> None:
        check_fractions(self.split_fractions)

"""Table-backed datasets: feature encoding, labels, split rules and writing the cached splits.

Shared by the bring-your-own ``csv`` adapter, ``pad_ufes`` and ``adni`` (HDF5). Conventions:

* categorical cell -> code ``0..n-1`` over the sorted observed levels of the whole table (codes carry
  no label information, so using every row is not a leak); continuous cell -> z-score with the mean
  and standard deviation of the *training* rows' observed cells;
* an empty cell (or one of ``missing_values``) is a missing *cell*: code/value 0 and
  ``cat_mask``/``num_mask`` False, which the tabular encoder replaces by its mask token;
* a row with no observed feature cell has the tabular modality naturally absent; a row whose image
  is empty, absent, 0 bytes or unreadable has the image naturally absent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .base import SPLITS, TabularSchema
from .cache import CacheWriter, split_report
from .io import IMAGENET_MEAN, IMAGENET_STD, ChannelStats, Progress, decode_into
from .options import MISSING_VALUES


def is_missing(values: pd.Series, tokens: Sequence[str] = MISSING_VALUES) -> np.ndarray:
    """Boolean mask of missing cells (NaN or a missing token)."""
    lowered = {t.strip().lower() for t in tokens}
    text = values.astype("string").str.strip().str.lower()
    return (values.isna() | text.isin(lowered).fillna(True)).to_numpy(dtype=bool)


def _natural_key(v: str) -> tuple[int, float, str]:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


@dataclass
class EncodedTable:
    """Arrays of the table modality (``N`` rows) plus its schema."""

    arrays: dict[str, np.ndarray]
    schema: TabularSchema
    present: np.ndarray  # N bool: at least one observed cell
    levels: dict[str, list[str]]


def encode_features(
    df: pd.DataFrame,
    categorical: Sequence[str],
    continuous: Sequence[str],
    fit_rows: np.ndarray,
    missing_values: Sequence[str] = MISSING_VALUES,
    where: str = "table",
) -> EncodedTable:
    """Encode feature columns (see the module docstring); ``fit_rows`` (bool N) are the training rows."""
    n = len(df)
    cat = np.zeros((n, len(categorical)), dtype=np.int64)
    cat_mask = np.ones((n, len(categorical)), dtype=bool)
    levels: dict[str, list[str]] = {}
    cards = []
    for j, col in enumerate(categorical):
        miss = is_missing(df[col], missing_values)
        text = df[col].astype("string").str.strip()
        lv = sorted({str(v) for v in text[~miss]}, key=_natural_key)
        levels[col] = lv
        index = {v: i for i, v in enumerate(lv)}
        cat[~miss, j] = [index[str(v)] for v in text[~miss]]
        cat_mask[:, j] = ~miss
        cards.append(max(len(lv), 1))
    num = np.zeros((n, len(continuous)), dtype=np.float32)
    num_mask = np.ones((n, len(continuous)), dtype=bool)
    for j, col in enumerate(continuous):
        miss = is_missing(df[col], missing_values)
        values = pd.to_numeric(df[col].where(~pd.Series(miss, index=df.index)), errors="coerce")
        bad = values.isna().to_numpy() & ~miss
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: column {col!r} is listed as continuous but row {k} holds "
                f"{df[col].iloc[k]!r}, not a number; list it under categorical or fix the cell"
            )
        v = values.to_numpy(dtype=np.float64)
        obs = ~miss
        fit = obs & fit_rows
        mean = float(v[fit].mean()) if fit.any() else 0.0
        std = float(v[fit].std()) if fit.sum() > 1 else 1.0
        std = std if std > 1e-12 else 1.0
        num[obs, j] = ((v[obs] - mean) / std).astype(np.float32)
        num_mask[:, j] = obs
    schema = TabularSchema(
        cat_cardinalities=tuple(cards),
        n_num=len(continuous),
        cat_names=tuple(categorical),
        num_names=tuple(continuous),
    )
    arrays = {"tabular.cat": cat, "tabular.num": num}
    if not cat_mask.all() or not num_mask.all():
        arrays["tabular.cat_mask"] = cat_mask
        arrays["tabular.num_mask"] = num_mask
    present = (
        np.concatenate([cat_mask, num_mask], axis=1).any(axis=1)
        if (categorical or continuous)
        else np.zeros(n, dtype=bool)
    )
    return EncodedTable(arrays=arrays, schema=schema, present=present, levels=levels)


def encode_multiclass(
    values: pd.Series,
    classes: Sequence[str] = (),
    where: str = "label",
    missing_values: Sequence[str] = MISSING_VALUES,
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """(codes ``N`` int64, class names, labelled-row mask); unknown labels against ``classes`` are errors."""
    miss = is_missing(values, missing_values)
    text = values.astype("string").str.strip()
    observed = sorted({str(v) for v in text[~miss]}, key=_natural_key)
    names = tuple(classes) if classes else tuple(observed)
    unknown = sorted(set(observed) - set(names))
    if unknown:
        raise DataError(f"{where}: label(s) {unknown[:5]} are not among the card's classes {list(names)}")
    index = {c: i for i, c in enumerate(names)}
    y = np.full(len(values), -1, dtype=np.int64)
    y[~miss] = [index[str(v)] for v in text[~miss]]
    return y, names, ~miss


def encode_multilabel_columns(
    df: pd.DataFrame, columns: Sequence[str], where: str = "labels"
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Several 0/1 (or true/false) columns -> ``N x C`` float32; rows with an empty label cell are dropped."""
    truthy, falsy = {"1", "1.0", "true", "yes", "y", "t"}, {"0", "0.0", "false", "no", "n", "f", "-1", "-1.0"}
    y = np.zeros((len(df), len(columns)), dtype=np.float32)
    ok = np.ones(len(df), dtype=bool)
    for j, col in enumerate(columns):
        text = df[col].astype("string").str.strip().str.lower()
        pos = text.isin(truthy).fillna(False).to_numpy(dtype=bool)
        neg = text.isin(falsy).fillna(False).to_numpy(dtype=bool)
        other = ~(pos | neg) & ~is_missing(df[col])
        if other.any():
            k = int(np.flatnonzero(other)[0])
            raise DataError(f"{where}: label column {col!r} row {k} holds {df[col].iloc[k]!r}; expected 0/1")
        y[pos, j] = 1.0
        ok &= pos | neg
    return y, tuple(columns), ok


def encode_multilabel_delimited(
    values: pd.Series, delimiter: str, classes: Sequence[str] = (), where: str = "label"
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """One delimited string column (``"cat|dog"``) -> ``N x C`` float32; an empty cell means no label set."""
    lists = [
        [t.strip() for t in str(v).split(delimiter) if t.strip()] if not pd.isna(v) else [] for v in values
    ]
    seen = sorted({t for row in lists for t in row}, key=_natural_key)
    names = tuple(classes) if classes else tuple(seen)
    unknown = sorted(set(seen) - set(names))
    if unknown:
        raise DataError(f"{where}: label(s) {unknown[:5]} are not among the card's classes {list(names)}")
    index = {c: i for i, c in enumerate(names)}
    y = np.zeros((len(lists), len(names)), dtype=np.float32)
    for i, row in enumerate(lists):
        for t in row:
            y[i, index[t]] = 1.0
    return y, names, np.ones(len(lists), dtype=bool)


def random_split(
    n: int,
    fractions: Sequence[float],
    seed: int,
    strata: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Split ids (0 train, 1 val, 2 test) for ``n`` rows.

    With ``groups`` (e.g. patient ids) whole groups go to one split (groups shuffled, then cut by
    the fractions of the group count); otherwise rows are split within each stratum (class), with
    ``round(f * n_c)`` val and test rows per class, so every split keeps the class balance.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise DataError(
            f"split_fractions must be three non-negative numbers summing to 1, got {list(fractions)}"
        )
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=np.int8)
    if groups is not None:
        uniq, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        order = rng.permutation(len(uniq))
        n_val, n_test = int(round(fr[1] * len(uniq))), int(round(fr[2] * len(uniq)))
        gsplit = np.zeros(len(uniq), dtype=np.int8)
        gsplit[order[:n_test]] = 2
        gsplit[order[n_test : n_test + n_val]] = 1
        return gsplit[inverse]
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        n_val, n_test = int(round(fr[1] * len(idx))), int(round(fr[2] * len(idx)))
        out[idx[:n_test]] = 2
        out[idx[n_test : n_test + n_val]] = 1
    return out


def check_splits(split_of: np.ndarray, where: str) -> None:
    """Every split must hold at least one row."""
    for k, name in enumerate(SPLITS):
        if not (split_of == k).any():
            raise DataError(
                f"{where}: the {name!r} split is empty; check the split column values or "
                "split_fractions (every split needs at least one labelled row)"
            )


def image_stats(normalize: str, channels: int, stats: ChannelStats | None) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) for ``Split.image_mean`` / ``image_std``."""
    if normalize == "imagenet" and channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    if normalize == "unit":
        return [0.0] * channels, [1.0] * channels
    if stats is None:
        return [0.5] * channels, [0.25] * channels
    return stats.result()


def write_splits(
    writer: CacheWriter,
    *,
    split_of: np.ndarray,
    y: np.ndarray,
    class_names: tuple[str, ...],
    multilabel: bool,
    image_sources: Sequence[Any | None] | None,
    image_reader: Callable[[Any], np.ndarray | None] | None,
    image_shape: tuple[int, ...],
    modality_arrays: dict[str, np.ndarray],
    tabular_present: np.ndarray,
    groups: np.ndarray | None,
    progress: Progress,
    normalize: str = "imagenet",
    extra_image_absent: np.ndarray | None = None,
    describe_source: Callable[[Any], str] = str,
) -> dict[str, Any]:
    """Write every split's arrays; return ``report``, ``image_mean`` and ``image_std`` for the meta.

    ``modality_arrays`` maps ``"tabular.<key>"`` to ``N x ...`` arrays (rows in table order);
    ``image_sources[i]`` is what ``image_reader`` decodes (a path, an HDF5 key, ...) or ``None``;
    the ones that do not decode are noted in ``writer.missing`` (named as ``describe_source`` says).
    """
    report: dict[str, Any] = {}
    stats = ChannelStats(image_shape[0])
    for k, split in enumerate(SPLITS):  # train first: its images give the "dataset" statistics
        rows = np.flatnonzero(split_of == k)
        pixels = writer.empty(split, "image.pixels", (len(rows), *image_shape), np.uint8)
        if image_sources is not None and image_reader is not None:
            sources = [image_sources[i] for i in rows]
            ok = decode_into(
                pixels,
                sources,
                image_reader,
                progress,
                description=f"{split}: decoding images",
                stats=stats if split == "train" else None,
            )
            writer.missing.record(split, sources, ok, describe=describe_source)
        else:
            ok = np.zeros(len(rows), dtype=bool)
        if extra_image_absent is not None:
            ok &= ~extra_image_absent[rows]
        pixels.flush()
        del pixels
        for name, arr in modality_arrays.items():
            writer.put(split, name, arr[rows])
        present = np.stack([ok, tabular_present[rows]], axis=1)
        writer.put(split, "y", y[rows])
        writer.put(split, "natural_present", present)
        if groups is not None:
            writer.put(split, "groups", np.asarray(groups)[rows].astype(str))
        report[split] = split_report(y[rows], present, class_names, multilabel)
    mean, std = image_stats(normalize, image_shape[0], stats)
    return {"report": report, "image_mean": mean, "image_std": std}

"""MIMIC-IV EHR + MIMIC-CXR-JPG (adapter ``mimic``): 25-label phenotyping, MedFuse / DrFuse layout.

Reads what MedFuse's ``mimic4extract`` (a fork of mimic3-benchmarks) and the MIMIC-CXR-JPG
release produce, under ``<data root>/<dir>/``::

    <ehr_dir>/root/all_stays.csv                          subject_id, stay_id, intime, outtime
    <ehr_dir>/<task_dir>/{train,val,test}_listfile.csv    stay, period_length, stay_id, 25 labels
    <ehr_dir>/<task_dir>/{train,test}/<stay>               episode time series (val episodes in train/)
    <cxr_dir>/mimic-cxr-2.0.0-metadata.csv(.gz)           dicom_id, subject_id, ViewPosition,
                                                          StudyDate, StudyTime (PhysioNet ships .gz)
    <cxr_dir>/<cxr_images>/**/<dicom_id>.jpg              JPGs (MedFuse's resized/ copy, or files/)

EHR (DrFuse/MedFuse): the first ``hours`` (48) of each stay discretised at ``timestep`` (1 h) into
76 channels by mimic3-benchmarks' discretizer (17 variables: 12 continuous values, 47 one-hot
categorical levels, 17 "observed" masks; imputation "previous", a variable never seen yet takes
its normal value), the 12 continuous channels standardised with statistics of the training
episodes (or MedFuse's ``.normalizer`` pickle), then values beyond +-``clip`` set to 0 (DrFuse).

CXR: for each stay the latest study with ``ViewPosition`` in ``view_positions`` (AP) taken within
``cxr_window_hours`` (48) of ICU admission (``None``: until discharge, MedFuse's phenotyping rule),
resized (shorter side 256) and centre-cropped to 224. Stays without such an X-ray (or whose JPG is
unreadable) have the image naturally absent; ``cohort: paired`` keeps only stays with one (DFPL).
"""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ..registry import register_dataset
from .base import SPLITS, DataInfo
from .cache import CacheWriter, FileDataset, split_report
from .io import ChannelStats, Progress, decode_into, read_image
from .options import MIMICOptions
from .table import image_stats

#: mimic3-benchmarks ``discretizer_config.json``: channel order, categorical levels, normal values.
CHANNELS: tuple[str, ...] = (
    "Capillary refill rate",
    "Diastolic blood pressure",
    "Fraction inspired oxygen",
    "Glascow coma scale eye opening",
    "Glascow coma scale motor response",
    "Glascow coma scale total",
    "Glascow coma scale verbal response",
    "Glucose",
    "Heart Rate",
    "Height",
    "Mean blood pressure",
    "Oxygen saturation",
    "Respiratory rate",
    "Systolic blood pressure",
    "Temperature",
    "Weight",
    "pH",
)
LEVELS: dict[str, tuple[str, ...]] = {
    "Capillary refill rate": ("0.0", "1.0"),
    "Glascow coma scale eye opening": (
        "To Pain",
        "3 To speech",
        "1 No Response",
        "4 Spontaneously",
        "None",
        "To Speech",
        "Spontaneously",
        "2 To pain",
    ),
    "Glascow coma scale motor response": (
        "1 No Response",
        "3 Abnorm flexion",
        "Abnormal extension",
        "No response",
        "4 Flex-withdraws",
        "Localizes Pain",
        "Flex-withdraws",
        "Obeys Commands",
        "Abnormal Flexion",
        "6 Obeys Commands",
        "5 Localizes Pain",
        "2 Abnorm extensn",
    ),
    "Glascow coma scale total": ("11", "10", "13", "12", "15", "14", "3", "5", "4", "7", "6", "9", "8"),
    "Glascow coma scale verbal response": (
        "1 No Response",
        "No Response",
        "Confused",
        "Inappropriate Words",
        "Oriented",
        "No Response-ETT",
        "5 Oriented",
        "Incomprehensible sounds",
        "1.0 ET/Trach",
        "4 Confused",
        "2 Incomp sounds",
        "3 Inapprop words",
    ),
}
NORMAL: dict[str, str] = {
    "Capillary refill rate": "0.0",
    "Diastolic blood pressure": "59.0",
    "Fraction inspired oxygen": "0.21",
    "Glascow coma scale eye opening": "4 Spontaneously",
    "Glascow coma scale motor response": "6 Obeys Commands",
    "Glascow coma scale total": "15",
    "Glascow coma scale verbal response": "5 Oriented",
    "Glucose": "128.0",
    "Heart Rate": "86",
    "Height": "170.0",
    "Mean blood pressure": "77.0",
    "Oxygen saturation": "98.0",
    "Respiratory rate": "19",
    "Systolic blood pressure": "118.0",
    "Temperature": "36.6",
    "Weight": "81.0",
    "pH": "7.4",
}


class Discretizer:
    """mimic3-benchmarks' discretizer (store_masks, impute_strategy "previous", start_time "zero").

    An episode's rows at hour ``t <= end`` fall in bin ``int(t / timestep - 1e-6)`` of
    ``int(end / timestep + 1 - 1e-6)`` bins; the last value of a bin wins; an empty bin repeats the
    previous value of the variable, or its normal value before the first observation. Categorical
    variables are one-hot over :data:`LEVELS`; a value outside them is skipped (the original code
    raises), as are rows before hour -1 (where the original's bin assertion fails).
    """

    def __init__(self, timestep: float = 1.0) -> None:
        self.timestep = timestep
        self.begin: list[int] = []
        header: list[str] = []
        for ch in CHANNELS:
            self.begin.append(len(header))
            header += [f"{ch}->{v}" for v in LEVELS[ch]] if ch in LEVELS else [ch]
        header += [f"mask->{ch}" for ch in CHANNELS]
        self.header = tuple(header)
        self.width = len(header)
        self.continuous = np.array([j for j, h in enumerate(header) if "->" not in h])
        self.skipped = 0

    def n_bins(self, end: float) -> int:
        """Number of time steps for an episode ending at ``end`` hours."""
        return int(end / self.timestep + 1.0 - 1e-6)

    def transform(self, frame: pd.DataFrame, end: float) -> np.ndarray:
        """``n_bins x 76`` array of one episode (``frame``: ``Hours`` + variable columns, string cells)."""
        eps = 1e-6
        n = self.n_bins(end)
        out = np.zeros((n, self.width), dtype=np.float32)
        hours = pd.to_numeric(frame["Hours"], errors="coerce").to_numpy(dtype=np.float64)
        bins = np.trunc(hours / self.timestep - eps)
        keep = np.isfinite(hours) & (hours <= end + eps) & (bins >= 0) & (bins < n)
        bins = bins.astype(np.int64)
        mask_col = self.width - len(CHANNELS)
        for j, ch in enumerate(CHANNELS):
            last: list[str | None] = [None] * n
            if ch in frame.columns:
                col = frame[ch].to_numpy()
                for b, v in zip(bins[keep], col[keep], strict=False):
                    if isinstance(v, str) and v != "":
                        if self._encode(ch, v) is None:
                            self.skipped += 1
                            continue
                        last[b] = v
            prev = NORMAL[ch]
            for b in range(n):
                if last[b] is not None:
                    prev = last[b]  # type: ignore[assignment]
                    out[b, mask_col + j] = 1.0
                code = self._encode(ch, prev)
                if ch in LEVELS:
                    out[b, self.begin[j] + code] = 1.0  # type: ignore[operator]
                else:
                    out[b, self.begin[j]] = code  # type: ignore[assignment]
        return out

    @staticmethod
    def _encode(ch: str, value: str) -> float | int | None:
        if ch in LEVELS:
            try:
                return LEVELS[ch].index(value)
            except ValueError:
                return None
        try:
            return float(value)
        except ValueError:
            return None


def normalize_episode(x: np.ndarray, continuous: np.ndarray, means: np.ndarray, stds: np.ndarray,
                      clip: float) -> np.ndarray:
    """Standardise the continuous channels, then zero every value beyond +-``clip`` (DrFuse; 0: off)."""
    x = np.array(x, dtype=np.float32, copy=True)
    x[:, continuous] = (x[:, continuous] - means) / stds
    if clip > 0:
        x[(x > clip) | (x < -clip)] = 0.0
    return x


def select_cxr(
    meta: pd.DataFrame, stays: pd.DataFrame, window_hours: float | None, views: tuple[str, ...]
) -> pd.DataFrame:
    """Per ICU stay the latest study of an allowed view within the window: columns ``stay_id, dicom_id``."""
    m = meta.merge(stays[["subject_id", "stay_id", "intime", "outtime"]], on="subject_id", how="inner")
    time = m["StudyTime"].astype(float).astype(int).map(lambda x: f"{x:06d}")
    date = m["StudyDate"].astype(float).astype(int).astype(str)
    m["StudyDateTime"] = pd.to_datetime(date + " " + time, format="%Y%m%d %H%M%S")
    intime, outtime = pd.to_datetime(m["intime"]), pd.to_datetime(m["outtime"])
    end = outtime if window_hours is None else intime + pd.to_timedelta(window_hours, unit="h")
    m = m[(m["StudyDateTime"] >= intime) & (m["StudyDateTime"] <= end) & m["ViewPosition"].isin(views)]
    m = m.sort_values(["stay_id", "StudyDateTime"], kind="stable").groupby("stay_id").tail(1)
    return m[["stay_id", "dicom_id"]]


@register_dataset("mimic")
class MIMICDataset(FileDataset):
    """MIMIC-IV EHR time series + MIMIC-CXR-JPG chest X-rays, 25 phenotypes (see the module docstring)."""

    Options = MIMICOptions
    options: MIMICOptions
    source = (
        "PhysioNet (credentialed): MIMIC-IV v1.0 (physionet.org/content/mimiciv) processed with "
        "MedFuse's mimic4extract (github.com/nyuad-cai/MedFuse), and MIMIC-CXR-JPG v2.0.0 "
        "(physionet.org/content/mimic-cxr-jpg)"
    )

    def ehr(self) -> Path:
        """The ``mimic4extract`` output root."""
        return self.dataset_dir() / self.options.ehr_dir

    def cxr(self) -> Path:
        """The MIMIC-CXR-JPG root."""
        return self.dataset_dir() / self.options.cxr_dir

    def metadata(self) -> Path:
        """The MIMIC-CXR-JPG metadata table: ``mimic-cxr-2.0.0-metadata.csv``, or the ``.csv.gz`` PhysioNet ships."""
        plain = self.cxr() / "mimic-cxr-2.0.0-metadata.csv"
        packed = plain.with_name(plain.name + ".gz")
        return packed if not plain.is_file() and packed.is_file() else plain

    def fingerprint_inputs(self) -> tuple[list[Path], list[tuple[Path, tuple[str, ...]]]]:
        """Stays, list files, CXR metadata (either form) and normaliser; numbers of episode files and JPGs."""
        o = self.options
        task = self.ehr() / o.task_dir
        meta = self.cxr() / "mimic-cxr-2.0.0-metadata.csv"
        files = [self.ehr() / "root" / "all_stays.csv", *(task / f"{s}_listfile.csv" for s in SPLITS),
                 meta, meta.with_name(meta.name + ".gz")]
        if o.normalizer:
            files.append(self.dataset_dir() / o.normalizer)
        dirs = [(task / "train", ()), (task / "test", ()), (self.cxr() / o.cxr_images, (".jpg",))]
        return files, dirs

    def image_source(self) -> str:
        """The metadata the X-rays are selected from and the JPG folder."""
        return f"the X-rays selected from {self.metadata()} (JPGs under {self.cxr() / self.options.cxr_images})"

    def check_layout(self) -> None:
        """The stays table, the three list files, the episode folders and the CXR metadata."""
        o = self.options
        self.require_file(self.ehr() / "root" / "all_stays.csv", "mimic4extract output")
        task = self.ehr() / o.task_dir
        for s in SPLITS:
            self.require_file(
                task / f"{s}_listfile.csv", "mimic4extract create_phenotyping + split_train_val"
            )
        for s in ("train", "test"):
            self.require_dir(task / s, "episode time series")
        self.require_file(self.metadata(), "MIMIC-CXR-JPG metadata, or the same file gzipped (.csv.gz)")
        self.require_dir(self.cxr() / o.cxr_images, "the JPGs (MedFuse's resized/ or MIMIC-CXR-JPG files/)")
        if o.normalizer:
            self.require_file(self.dataset_dir() / o.normalizer, "options.normalizer")

    def listfile(self, split: str) -> pd.DataFrame:
        """One list file; checks its header."""
        path = self.ehr() / self.options.task_dir / f"{split}_listfile.csv"
        df = pd.read_csv(path)
        df.columns = [str(c).strip() for c in df.columns]
        if list(df.columns[:3]) != ["stay", "period_length", "stay_id"] or df.shape[1] < 4:
            raise DataError(
                f"{path}: expected the header stay,period_length,stay_id,<labels...> "
                f"(got {list(df.columns[:4])})"
            )
        return df

    def decode(self, writer: CacheWriter, progress: Progress) -> dict[str, Any]:
        """Discretise and normalise the episodes, select and decode the X-rays."""
        o = self.options
        lists = {s: self.listfile(s) for s in SPLITS}
        class_names = tuple(lists["train"].columns[3:])
        for s in SPLITS:
            if tuple(lists[s].columns[3:]) != class_names:
                raise DataError(f"{s}_listfile.csv: label columns differ from train_listfile.csv")
        stays = pd.read_csv(
            self.ehr() / "root" / "all_stays.csv", usecols=["subject_id", "stay_id", "intime", "outtime"]
        )
        meta = pd.read_csv(
            self.metadata(),  # pandas infers gzip from a .gz name
            usecols=["dicom_id", "subject_id", "ViewPosition", "StudyDate", "StudyTime"],
        )
        chosen = select_cxr(meta, stays, o.cxr_window_hours, tuple(o.view_positions))
        dicom_of = dict(zip(chosen["stay_id"].astype(np.int64), chosen["dicom_id"].astype(str), strict=False))
        jpgs = {p.stem: p for p in (self.cxr() / o.cxr_images).rglob("*.jpg")}
        disc = Discretizer(o.timestep)
        t_max = disc.n_bins(o.hours)
        notes: list[str] = []
        if o.cohort == "paired":
            for s in SPLITS:
                before = len(lists[s])
                lists[s] = lists[s][lists[s]["stay_id"].astype(np.int64).isin(dicom_of.keys())]
                lists[s] = lists[s].reset_index(drop=True)
                notes.append(
                    f"{s}: {before - len(lists[s])} stay(s) without a qualifying X-ray left out "
                    "(cohort: paired)"
                )
        values: dict[str, np.ndarray] = {}
        lengths: dict[str, np.ndarray] = {}
        total = np.zeros(len(disc.continuous), dtype=np.float64)
        total_sq = np.zeros(len(disc.continuous), dtype=np.float64)
        count = 0
        for s in SPLITS:
            df = lists[s]
            folder = self.ehr() / o.task_dir / ("test" if s == "test" else "train")
            arr = writer.empty(s, "tabular.values", (len(df), t_max, disc.width), np.float32)
            lens = np.zeros(len(df), dtype=np.int64)
            for i, (stay, period) in enumerate(
                progress(
                    list(zip(df["stay"], df["period_length"], strict=False)),
                    description=f"{s}: discretising episodes",
                    total=len(df),
                )
            ):
                path = folder / str(stay)
                if not path.is_file():
                    raise self.missing(path, f"episode listed in {s}_listfile.csv")
                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
                if "Hours" not in frame.columns:
                    raise DataError(
                        f"{path}: expected a 'Hours' column (mimic3-benchmarks episode time series)"
                    )
                end = min(float(period), o.hours) if float(period) > 0 else o.hours
                x = disc.transform(frame, end)[:t_max]
                arr[i, : len(x)] = x
                lens[i] = len(x)
                if s == "train":
                    cont = x[:, disc.continuous].astype(np.float64)
                    total += cont.sum(axis=0)
                    total_sq += (cont**2).sum(axis=0)
                    count += len(x)
            values[s], lengths[s] = arr, lens
        if disc.skipped:
            notes.append(
                f"{disc.skipped} observation(s) with a value outside the discretizer's levels skipped"
            )
        means, stds = self.normalizer_stats(disc, total, total_sq, count)
        report: dict[str, Any] = {}
        stats = ChannelStats(3)
        shape = (3, o.image_size, o.image_size)
        for s in SPLITS:
            arr, df = values[s], lists[s]
            for i in range(len(df)):  # normalise in place, row by row (memory-mapped)
                n = lengths[s][i]
                arr[i, :n] = normalize_episode(arr[i, :n], disc.continuous, means, stds, o.clip)
            arr.flush()
            writer.put(s, "tabular.lengths", lengths[s])
            chosen_ids = [dicom_of.get(int(sid)) for sid in df["stay_id"].astype(np.int64)]
            # a selected X-ray whose JPG is not found is named by its expected (flat, MedFuse) path
            sources = [None if d is None else jpgs.get(d, self.cxr() / o.cxr_images / f"{d}.jpg") for d in chosen_ids]
            pixels = writer.empty(s, "image.pixels", (len(df), *shape), np.uint8)
            ok = decode_into(
                pixels,
                sources,
                partial(read_image, size=o.image_size, channels=3, resize=o.resize),
                progress,
                description=f"{s}: decoding X-rays",
                stats=stats if s == "train" else None,
            )
            window = (
                "between admission and discharge" if o.cxr_window_hours is None
                else f"within {o.cxr_window_hours:g} h of admission"
            )
            writer.missing.record(s, sources, ok, no_file=f"no {'/'.join(o.view_positions)} X-ray {window}")
            pixels.flush()
            del pixels
            y = df[list(class_names)].to_numpy(dtype=np.float32)
            present = np.stack([ok, np.ones(len(df), dtype=bool)], axis=1)
            writer.put(s, "y", y)
            writer.put(s, "natural_present", present)
            writer.put(s, "groups", df["stay"].astype(str).str.split("_").str[0].to_numpy().astype(str))
            report[s] = split_report(y, present, class_names, True)
        mean, std = image_stats("imagenet", 3, stats)
        info = DataInfo(
            name="mimic",
            task="multilabel",
            num_classes=len(class_names),
            image_shape=shape,
            tabular=None,
            tabular_kind="timeseries",
            timeseries_channels=disc.width,
            class_names=class_names,
            primary_metric="prauc",
        )
        return {"info": info, "report": report, "image_mean": mean, "image_std": std, "notes": notes}

    def normalizer_stats(
        self, disc: Discretizer, total: np.ndarray, total_sq: np.ndarray, count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Means and stds of the continuous channels: MedFuse's pickle, or the training episodes' rows."""
        if self.options.normalizer:
            path = self.dataset_dir() / self.options.normalizer
            try:
                with open(path, "rb") as f:
                    d = pickle.load(f, encoding="latin1")  # noqa: S301 - the user's own MedFuse file
                means = np.asarray(d["means"], dtype=np.float64)[disc.continuous]
                stds = np.asarray(d["stds"], dtype=np.float64)[disc.continuous]
            except Exception as exc:  # noqa: BLE001
                raise DataError(
                    f"{path}: not a mimic3-benchmarks normalizer pickle with 'means'/'stds' over "
                    f"{disc.width} channels ({type(exc).__name__})"
                ) from None
        elif count > 1:
            means = total / count
            var = (total_sq - 2.0 * total * means + count * means**2) / (count - 1)
            stds = np.sqrt(np.maximum(var, 0.0))
        else:
            means, stds = np.zeros(len(disc.continuous)), np.ones(len(disc.continuous))
        stds = np.where(stds < 1e-7, 1e-7, stds)
        return means.astype(np.float32), stds.astype(np.float32)

"""Decode once: the tensor cache of the file-backed adapters, and their common base class.

``mmbench prepare DATASET`` (or the first run) checks the layout, decodes every image and table
row into fixed-size arrays and writes them as ``.npy`` files under
``$MMBENCH_CACHE/<adapter>-<key>/`` (default ``~/.cache/mmbench``), where ``key`` hashes the
card's data part (adapter name + options), the dataset folder and :data:`CACHE_VERSION`. Runs
memory-map the arrays (``mmap_mode="c"``), so a batch is one vectorised gather from the page cache.
A cache is written into a temporary folder and renamed into place when complete, so an
interrupted ``prepare`` never leaves a half cache behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import DataError
from .base import SPLITS, DataInfo, DatasetAdapter, Split, TabularSchema
from .batch import MODALITIES
from .io import Progress, no_progress

CACHE_VERSION = 1
#: arrays at least this large are memory-mapped instead of read into memory
MMAP_BYTES = 64 * 1024 * 1024


def cache_root() -> Path:
    """``$MMBENCH_CACHE`` or ``~/.cache/mmbench``."""
    env = os.environ.get("MMBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmbench"


def plain(obj: Any) -> Any:
    """Dataclasses / tuples / paths -> JSON-able plain values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def cache_key(adapter: str, options: Any, source: Path) -> str:
    """16 hex digits of sha256 over (adapter, options, resolved dataset folder, cache version)."""
    payload = {
        "adapter": adapter,
        "options": plain(options),
        "source": str(Path(source).resolve()),
        "version": CACHE_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file(split: str, name: str) -> str:
    return f"{split}__{name}.npy"


class CacheWriter:
    """Writes the arrays of one cache into a temporary folder; :meth:`commit` renames it into place."""

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.tmp = self.final.with_name(f"{self.final.name}.tmp-{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.names: list[str] = []

    def empty(self, split: str, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A zero-initialised writable memory map for a large array (images)."""
        self.names.append(f"{split}/{name}")
        return np.lib.format.open_memmap(
            self.tmp / _file(split, name), mode="w+", dtype=dtype, shape=tuple(int(s) for s in shape)
        )

    def put(self, split: str, name: str, array: np.ndarray) -> None:
        """Store a small array."""
        self.names.append(f"{split}/{name}")
        np.save(self.tmp / _file(split, name), np.ascontiguousarray(array), allow_pickle=False)

    def commit(self, meta: dict[str, Any]) -> None:
        """Write ``meta.json`` and move the folder into place, replacing an older copy."""
        meta = dict(meta, arrays=self.names, version=CACHE_VERSION)
        (self.tmp / "meta.json").write_text(json.dumps(plain(meta), indent=1, sort_keys=True))
        if self.final.exists():
            old = self.final.with_name(f"{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)  # readers holding memory maps keep their (unlinked) files
            shutil.rmtree(old, ignore_errors=True)
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        """Remove the temporary folder."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def info_from_dict(d: dict[str, Any]) -> DataInfo:
    """Inverse of ``plain(info)``."""
    d = dict(d)
    tab = d.get("tabular")
    if tab is not None:
        tab = TabularSchema(**{k: tuple(v) if isinstance(v, list) else v for k, v in tab.items()})
    d["tabular"] = tab
    d["image_shape"] = tuple(d["image_shape"])
    d["class_names"] = tuple(d.get("class_names", ()))
    return DataInfo(**d)


def read_cache(path: Path) -> tuple[DataInfo, dict[str, Split], dict[str, Any]]:
    """Load a committed cache: (info, splits with memory-mapped large arrays, meta)."""
    meta = json.loads((path / "meta.json").read_text())
    info = info_from_dict(meta["info"])
    splits: dict[str, Split] = {}
    for split in SPLITS:
        arrays: dict[str, np.ndarray] = {}
        for entry in meta["arrays"]:
            s, name = entry.split("/", 1)
            if s != split:
                continue
            f = path / _file(split, name)
            big = f.stat().st_size >= MMAP_BYTES
            arrays[name] = np.load(f, mmap_mode="c" if big else None, allow_pickle=False)
        inputs: dict[str, dict[str, torch.Tensor]] = {}
        for name, arr in arrays.items():
            if "." in name:
                mod, key = name.split(".", 1)
                inputs.setdefault(mod, {})[key] = torch.from_numpy(arr)
        mean = meta.get("image_mean", 0.5)
        std = meta.get("image_std", 0.25)
        groups = arrays.get("groups")
        splits[split] = Split(
            inputs=inputs,
            y=torch.from_numpy(np.asarray(arrays["y"])),
            natural_present=torch.from_numpy(np.asarray(arrays["natural_present"]).astype(bool)),
            groups=None if groups is None else np.asarray(groups),
            image_mean=_stat(mean, len(info.image_shape)),
            image_std=_stat(std, len(info.image_shape)),
            extra={
                "cache": str(path),
                "natural_missing": meta.get("report", {}).get(split, {}).get("natural_missing", {}),
            },
        )
    return info, splits, meta


def _stat(value: float | list[float], image_dims: int) -> Any:
    """A scalar, or a per-channel ``C x 1 x 1 (x 1)`` tensor broadcasting over ``B x C x ...``."""
    if isinstance(value, (int, float)):
        return float(value)
    return torch.tensor(value, dtype=torch.float32).view(-1, *([1] * (image_dims - 1)))


def split_report(
    y: np.ndarray, present: np.ndarray, class_names: tuple[str, ...], multilabel: bool
) -> dict[str, Any]:
    """Counts per class and natural missingness per modality of one split."""
    if multilabel:
        counts = {c: int(v) for c, v in zip(class_names, np.asarray(y).sum(axis=0), strict=False)}
    else:
        binc = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(class_names))
        counts = {c: int(v) for c, v in zip(class_names, binc, strict=False)}
    missing = {m: int((~present[:, j]).sum()) for j, m in enumerate(MODALITIES)}
    return {"n": int(len(y)), "classes": counts, "natural_missing": missing}


class FileDataset(DatasetAdapter):
    """Base of the adapters that read files from the data root and decode them once into the cache.

    Subclasses name their folder under the data root in ``Options.dir``, say where to get the data
    in :attr:`source`, and implement :meth:`check_layout` and :meth:`decode`.
    """

    #: official source / instructions, appended to every "not found" error
    source: str = ""

    def dataset_dir(self) -> Path:
        """``options.dir`` if absolute, else ``<data root>/<options.dir>``."""
        sub = Path(getattr(self.options, "dir", "") or "")
        if sub.is_absolute():
            return sub
        if not self.data_root:
            raise DataError(
                f"{self.adapter_name}: no data root; pass --data-root DIR or set MMBENCH_DATA "
                f"(expected DIR/{sub}/...; get the data from {self.source})"
            )
        return Path(self.data_root).expanduser() / sub

    @property
    def adapter_name(self) -> str:
        """The adapter's registered name (set on the class by the registry)."""
        return getattr(type(self), "registry_name", type(self).__name__)

    def missing(self, what: Path | str, detail: str = "") -> DataError:
        """A one-line "expected X at Y" error with the official source."""
        extra = f" ({detail})" if detail else ""
        return DataError(f"{self.adapter_name}: expected {what}{extra}; get the data from {self.source}")

    def require_file(self, path: Path, detail: str = "") -> Path:
        """``path`` if it is a file, else a :meth:`missing` error."""
        if not path.is_file():
            raise self.missing(path, detail)
        return path

    def require_dir(self, path: Path, detail: str = "") -> Path:
        """``path`` if it is a folder, else a :meth:`missing` error."""
        if not path.is_dir():
            raise self.missing(f"the folder {path}", detail)
        return path

    @abstractmethod
    def check_layout(self) -> None:
        """Raise :class:`DataError` unless the expected files are present (cheap: no decoding)."""

    @abstractmethod
    def decode(self, writer: CacheWriter, progress: Progress) -> dict[str, Any]:
        """Decode everything into ``writer``; return meta: ``info`` (DataInfo), ``image_mean``/``image_std``,
        ``report`` (per split: :func:`split_report`), optional ``notes`` (list of lines)."""

    def cache_path(self) -> Path:
        """Folder of this dataset's cache."""
        return (
            cache_root()
            / f"{self.adapter_name}-{cache_key(self.adapter_name, self.options, self.dataset_dir())}"
        )

    def available(self) -> bool:
        """Whether the layout is found under the data root."""
        try:
            self.check_layout()
        except DataError:
            return False
        return True

    def build(self, progress: Progress = no_progress, force: bool = False) -> Path:
        """Check the layout and write the cache unless a complete one exists (or ``force``)."""
        from filelock import FileLock

        path = self.cache_path()
        if (path / "meta.json").is_file() and not force:
            return path
        self.check_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):  # parallel runs of a grid wait for one decoder
            if (path / "meta.json").is_file() and not force:
                return path
            writer = CacheWriter(path)
            try:
                meta = self.decode(writer, progress)
                meta = dict(meta, adapter=self.adapter_name, options=self.options, source=self.dataset_dir())
                writer.commit(meta)
            except DataError:
                writer.abort()
                raise
            except (KeyError, ValueError, OSError, pd.errors.ParserError) as exc:
                writer.abort()
                msg = str(exc).splitlines()[0] if str(exc) else ""
                raise DataError(f"{self.adapter_name}: malformed data under {self.dataset_dir()} "
                                f"({type(exc).__name__}: {msg}); expected the layout described in the "
                                f"adapter's docs; get the data from {self.source}") from None
            except BaseException:
                writer.abort()
                raise
        return path

    def load(self) -> tuple[DataInfo, dict[str, Split]]:
        """The cached splits (decoding first if there is no cache yet)."""
        info, splits, _ = read_cache(self.build())
        return info, splits

    def prepare(self, progress: Progress = no_progress, force: bool = False) -> dict[str, Any]:
        """``mmbench prepare``: check, decode into the cache, return the report (counts and missingness)."""
        existed = (self.cache_path() / "meta.json").is_file() and not force
        path = self.build(progress, force=force)
        info, _, meta = read_cache(path)
        return {
            "dataset": self.adapter_name,
            "dir": str(self.dataset_dir()),
            "cache": str(path),
            "reused_cache": existed,
            "task": info.task,
            "num_classes": info.num_classes,
            "image_shape": list(info.image_shape),
            "splits": meta.get("report", {}),
            "notes": meta.get("notes", []),
        }

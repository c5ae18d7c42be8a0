"""Decode once: the tensor cache of the file-backed adapters, and their common base class.

``mmbench prepare DATASET`` (or the first run) checks the layout, decodes every image and table
row into fixed-size arrays and writes them as ``.npy`` files under
``$MMBENCH_CACHE/<adapter>-<key>/`` (default ``~/.cache/mmbench``), where ``key`` hashes the
card's data part (adapter name, its ``version`` and options), the dataset folder and
:data:`CACHE_VERSION`. Runs memory-map the arrays (``mmap_mode="c"``), so a batch is one
vectorised gather from the page cache. A cache is written into a temporary folder and renamed into
place when complete, so an interrupted ``prepare`` never leaves a half cache behind.

A cache also stores the **fingerprint** of the data it was decoded from (:func:`data_fingerprint`:
size and modification time of each table / index file, and the number of image files in each
image folder; no file is hashed). Every load compares it with the folder as it is now and rebuilds
the cache, saying so in one line, when they differ, so data regenerated in place is never served
from a stale cache. Runs record the fingerprint (``data_fingerprint``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import DataError
from .base import SPLITS, DataInfo, DatasetAdapter, Split, TabularSchema
from .batch import MODALITIES
from .io import Progress, count_files, no_progress, why_unreadable

#: 2: meta.json carries the data fingerprint and the naturally missing files; the key the adapter version
CACHE_VERSION = 2
log = logging.getLogger("mmbench.data")
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


def cache_key(adapter: str, options: Any, source: Path, adapter_version: int = 1) -> str:
    """16 hex digits of sha256 over (adapter and its version, options, resolved dataset folder, cache
    version). The data themselves are checked by their fingerprint, stored inside the cache."""
    payload = {
        "adapter": adapter,
        "adapter_version": adapter_version,
        "options": plain(options),
        "source": str(Path(source).resolve()),
        "version": CACHE_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stamp(path: Path) -> dict[str, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return str(path)


def data_fingerprint(
    base: Path, files: Sequence[Path], image_dirs: Sequence[tuple[Path, tuple[str, ...]]]
) -> dict[str, Any]:
    """A cheap fingerprint of a dataset folder: no file content is read.

    ``files`` (tables, index and list files) -> size and ``mtime_ns`` (None when absent);
    ``image_dirs`` (folder, name suffixes; empty = every file) -> number of files found under it.
    Paths are written relative to ``base``; ``digest`` is 16 hex digits of sha256 over the rest.
    """
    fp: dict[str, Any] = {
        "files": {_relative(f, base): _stamp(Path(f)) for f in files},
        "image_counts": {_relative(d, base) + "/": count_files(Path(d), tuple(suf)) for d, suf in image_dirs},
    }
    text = json.dumps(fp, sort_keys=True, separators=(",", ":"))
    fp["digest"] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return fp


def fingerprint_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one short phrase per file or folder ([] if nothing)."""
    if not old or "files" not in old:
        return ["the cache holds no fingerprint"]
    out = []
    for name in sorted(set(old["files"]) | set(new["files"])):
        a, b = old["files"].get(name), new["files"].get(name)
        if a == b:
            continue
        if a is None:
            out.append(f"{name} appeared")
        elif b is None:
            out.append(f"{name} is gone")
        elif a["size"] != b["size"]:
            out.append(f"{name} {a['size']} -> {b['size']} bytes")
        else:
            out.append(f"{name} modified")
    counts_old, counts_new = old.get("image_counts", {}), new.get("image_counts", {})
    for name in sorted(set(counts_old) | set(counts_new)):
        a, b = counts_old.get(name), counts_new.get(name)
        if a != b:
            out.append(f"{name} {a} -> {b} files")
    return out


class MissingFiles:
    """The naturally absent images of a decode: per split, how many, and the first few with the reason."""

    def __init__(self, keep: int = 5) -> None:
        self.keep = keep
        self.splits: dict[str, dict[str, Any]] = {}

    def record(
        self,
        split: str,
        sources: Sequence[Any],
        ok: np.ndarray,
        no_file: str = "no file given",
        describe: Callable[[Any], str] = str,
    ) -> None:
        """Note the rows of ``sources`` that did not decode (``ok`` False); ``no_file`` says why a row
        has no source at all (e.g. "no qualifying X-ray")."""
        entry = self.splits.setdefault(split, {"count": 0, "no_file": 0, "no_file_reason": no_file, "first": []})
        for i in np.flatnonzero(~np.asarray(ok, dtype=bool)):
            src = sources[i]
            entry["count"] += 1
            if src is None or str(src).strip() == "":
                entry["no_file"] += 1
            elif len(entry["first"]) < self.keep:
                entry["first"].append([describe(src), why_unreadable(src)])

    def report(self) -> dict[str, dict[str, Any]]:
        """Per split: ``count``, ``no_file`` (rows without a source) and its reason, ``first`` [[file, why]]."""
        return {s: dict(v) for s, v in self.splits.items() if v["count"]}

    def first(self) -> str:
        """The first absent file and why (or why rows have no file), for a one-line error."""
        for s in SPLITS:
            if self.splits.get(s, {}).get("first"):
                path, why = self.splits[s]["first"][0]
                return f"{path} ({why})"
        for s in SPLITS:
            if self.splits.get(s, {}).get("no_file"):
                return f"no file for any row ({self.splits[s]['no_file_reason']})"
        return "no file"


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
        self.missing = MissingFiles()

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
                "data_fingerprint": meta.get("fingerprint"),
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
    #: set by :meth:`build`: what changed in the data when it rebuilt a stale cache, else None
    rebuilt_because: str | None = None

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
        ``report`` (per split: :func:`split_report`), optional ``notes`` (list of lines). Unreadable
        images are noted with ``writer.missing.record`` (``prepare`` names them)."""

    @abstractmethod
    def fingerprint_inputs(self) -> tuple[list[Path], list[tuple[Path, tuple[str, ...]]]]:
        """(tables / index files, [(image folder, file-name suffixes counted)]) of :meth:`fingerprint`."""

    def fingerprint(self) -> dict[str, Any]:
        """The data's fingerprint as the folder is now (:func:`data_fingerprint`; cheap, no hashing)."""
        files, image_dirs = self.fingerprint_inputs()
        return data_fingerprint(self.dataset_dir(), files, image_dirs)

    def image_source(self) -> str:
        """Where the images come from (column / file and folder), for the "no image readable" error."""
        return f"the image files under {self.dataset_dir()}"

    def expects_image(self) -> bool:
        """Whether the card asks for an image modality (the ``csv`` adapter's may have none)."""
        return True

    def cache_path(self) -> Path:
        """Folder of this dataset's cache."""
        key = cache_key(self.adapter_name, self.options, self.dataset_dir(), getattr(type(self), "version", 1))
        return cache_root() / f"{self.adapter_name}-{key}"

    def available(self) -> bool:
        """Whether the layout is found under the data root."""
        try:
            self.check_layout()
        except DataError:
            return False
        return True

    def _stale(self, path: Path, current: dict[str, Any]) -> str | None:
        """None if ``path`` holds a complete cache of the data as they are now, else why not ("" if absent)."""
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            return ""
        if (meta.get("fingerprint") or {}).get("digest") == current["digest"]:
            return None
        changes = fingerprint_changes(meta.get("fingerprint"), current)
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        return shown or "fingerprint differs"

    def check_readable(self, meta: dict[str, Any], missing: MissingFiles) -> None:
        """A one-line :class:`DataError` when a modality the card asks for is absent in every row of
        every split (e.g. a wrong ``image_root``): training on it would silently be unimodal."""
        report = meta.get("report", {})
        n = sum(int(r.get("n", 0)) for r in report.values())
        info: DataInfo = meta["info"]
        tab = info.tabular
        expects = {
            "image": self.expects_image(),
            "tabular": info.tabular_kind == "timeseries" or (tab is not None and (tab.cat_cardinalities or tab.n_num)),
        }
        for m in MODALITIES:
            absent = sum(int(r.get("natural_missing", {}).get(m, 0)) for r in report.values())
            if n == 0 or absent < n or not expects[m]:
                continue
            if m == "image":
                raise DataError(
                    f"{self.adapter_name}: no image of the {n} rows could be read, from {self.image_source()}; "
                    f"first: {missing.first()}; check the card's image options and the dataset folder"
                )
            raise DataError(
                f"{self.adapter_name}: no row of {self.dataset_dir()} has an observed {m} cell "
                f"({', '.join((tab.cat_names + tab.num_names)[:5]) if tab else m}); check the card's feature columns"
            )

    def build(self, progress: Progress = no_progress, force: bool = False, announce: bool = True) -> Path:
        """Check the layout and write the cache unless a complete one of the same data exists (or ``force``).

        A cache whose fingerprint differs from the folder's is rebuilt; :attr:`rebuilt_because` then
        says what changed, and with ``announce`` one warning line says so (``prepare`` reports it instead).
        """
        from filelock import FileLock

        self.rebuilt_because = None
        path = self.cache_path()
        current = self.fingerprint()
        stale = None if force else self._stale(path, current)
        if stale is None and not force:
            return path
        self.check_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):  # parallel runs of a grid wait for one decoder
            stale = None if force else self._stale(path, current)
            if stale is None and not force:
                return path
            if stale:
                self.rebuilt_because = stale
                if announce:
                    log.warning(
                        "%s: the data under %s changed since its cache was built (%s); rebuilding %s",
                        self.adapter_name, self.dataset_dir(), stale, path,
                    )
            writer = CacheWriter(path)
            try:
                meta = self.decode(writer, progress)
                self.check_readable(meta, writer.missing)
                meta = dict(
                    meta,
                    adapter=self.adapter_name,
                    options=self.options,
                    source=self.dataset_dir(),
                    fingerprint=self.fingerprint(),  # after decode: a raw build may have written index files
                    missing_files=writer.missing.report(),
                )
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
        """The cached splits (decoding first if there is no cache of the data as they are now)."""
        info, splits, _ = read_cache(self.build())
        return info, splits

    def prepare(self, progress: Progress = no_progress, force: bool = False) -> dict[str, Any]:
        """``mmbench prepare``: check, decode into the cache, return the report (counts and missingness)."""
        path = self.cache_path()
        existed = (path / "meta.json").is_file() and not force
        path = self.build(progress, force=force, announce=False)
        info, _, meta = read_cache(path)
        return {
            "dataset": self.adapter_name,
            "adapter": self.adapter_name,
            "dir": str(self.dataset_dir()),
            "cache": str(path),
            "reused_cache": existed and self.rebuilt_because is None,
            "rebuilt_because": self.rebuilt_because,
            "fingerprint": meta.get("fingerprint"),
            "task": info.task,
            "num_classes": info.num_classes,
            "image_shape": list(info.image_shape),
            "splits": meta.get("report", {}),
            "missing_files": meta.get("missing_files", {}),
            "notes": meta.get("notes", []),
        }

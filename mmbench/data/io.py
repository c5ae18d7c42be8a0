"""Reading images and volumes for the file-backed adapters (decoded once, into the cache).

Every reader returns ``None`` for a file that is absent, empty (0 bytes) or unreadable: that is the
dataset's *natural* missingness for the image slot, counted and reported, never a crash.

2-D images (PNG/JPEG/... through Pillow, or ``.npy`` arrays) become ``C x S x S`` uint8 arrays;
3-D volumes (NIfTI through nibabel, or ``.npy``) become ``1 x S x S x S`` uint8 arrays after a
per-volume min-max intensity scaling.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

T = TypeVar("T")

#: ImageNet channel statistics (torchvision / timm), used by MedFuse, DrFuse and TIP-style pipelines.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ResizeMode = Literal["stretch", "crop"]


class Progress(Protocol):
    """Wraps an iterable like ``tqdm`` / ``rich.progress.track``: ``progress(items, description, total)``."""

    def __call__(self, items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]: ...


def no_progress(items: Iterable[T], description: str = "", total: int | None = None) -> Iterable[T]:
    """The silent :class:`Progress` (library use and tests)."""
    return items


def _readable(path: str | os.PathLike | None) -> Path | None:
    if path is None or str(path).strip() == "":
        return None
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size == 0:
            return None
    except OSError:
        return None
    return p


def why_unreadable(source: object) -> str:
    """Why a source the reader returned ``None`` for gave no image (for ``prepare``'s report).

    Cheap: one ``stat``; a file that exists and is not empty failed to decode.
    """
    if source is None or str(source).strip() == "":
        return "no file given"
    if not isinstance(source, (str, os.PathLike)):
        return "unreadable"
    p = Path(source)
    try:
        if not p.exists():
            return "not found"
        if not p.is_file():
            return "not a file"
        if p.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError as exc:
        return f"cannot be read ({type(exc).__name__})"
    return "not a readable image"


def count_files(root: Path, suffixes: tuple[str, ...] = ()) -> int:
    """Number of files under ``root`` (recursively) whose lower-cased name ends with one of ``suffixes``
    (all files when empty); 0 when ``root`` is not a folder. One directory walk, no ``stat`` per file."""
    n, stack, seen = 0, [str(root)], set()
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for e in entries:
                if e.is_dir():
                    stack.append(e.path)
                elif (not suffixes or e.name.lower().endswith(suffixes)) and e.is_file():
                    n += 1
    return n


def read_image(
    path: str | os.PathLike | None, size: int, channels: int = 3, resize: ResizeMode = "stretch"
) -> np.ndarray | None:
    """A ``channels x size x size`` uint8 image, or ``None`` if absent/empty/unreadable.

    ``resize="stretch"`` resizes straight to ``size x size`` (TIP's DVM pipeline);
    ``resize="crop"`` resizes the shorter side to ``round(size * 256 / 224)`` then centre-crops
    ``size`` (torchvision ``Resize(256) + CenterCrop(224)``, the MedFuse/DrFuse evaluation transform).
    """
    from PIL import Image

    p = _readable(path)
    if p is None:
        return None
    mode = "RGB" if channels == 3 else "L"
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
            if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
                arr = np.moveaxis(arr, 0, -1)
            if arr.dtype != np.uint8:
                arr = _to_uint8(arr.astype(np.float32))
            img = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
            img = img.convert(mode)
        else:
            with Image.open(p) as im:
                img = im.convert(mode)
        if resize == "crop":
            short = round(size * 256 / 224)
            w, h = img.size
            scale = short / min(w, h)
            img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BILINEAR)
            w, h = img.size
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
        else:
            img = img.resize((size, size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError):  # PIL.UnidentifiedImageError is an OSError
        return None
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    return np.ascontiguousarray(arr)


def _to_uint8(vol: np.ndarray) -> np.ndarray:
    """Per-array min-max scaling to 0..255 (a constant array becomes zeros); NaN/inf become 0."""
    vol = np.nan_to_num(vol.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(vol.min()), float(vol.max())
    if hi - lo < 1e-12:
        return np.zeros(vol.shape, dtype=np.uint8)
    return np.round((vol - lo) / (hi - lo) * 255.0).astype(np.uint8)


def resize_volume(vol: np.ndarray, size: int) -> np.ndarray:
    """Trilinear resize of a ``D x H x W`` float volume to ``size^3`` (``align_corners=False``)."""
    t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None, None]
    if tuple(t.shape[2:]) != (size, size, size):
        t = F.interpolate(t, size=(size, size, size), mode="trilinear", align_corners=False)
    return t[0, 0].numpy()


def volume_to_array(vol: np.ndarray, size: int) -> np.ndarray:
    """A raw volume (``D x H x W``, or with singleton channel/time axes) -> ``1 x size^3`` uint8."""
    vol = np.asarray(vol)
    vol = np.squeeze(vol)
    if vol.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {tuple(np.asarray(vol).shape)}")
    return _to_uint8(resize_volume(vol.astype(np.float32), size))[None]


def read_volume(path: str | os.PathLike | None, size: int) -> np.ndarray | None:
    """A ``1 x size x size x size`` uint8 volume from NIfTI (``.nii``/``.nii.gz``) or ``.npy``."""
    p = _readable(path)
    if p is None:
        return None
    try:
        if p.suffix.lower() == ".npy":
            vol = np.load(p, allow_pickle=False)
        else:
            nib = require("nibabel", "reading NIfTI volumes")
            vol = np.asanyarray(nib.load(str(p)).dataobj)
        return volume_to_array(vol, size)
    except DataError:
        raise
    except Exception:  # nibabel raises many types for corrupt files  # noqa: BLE001
        return None


def require(module: str, what: str):  # noqa: ANN201 - returns a module
    """Import an optional dependency or raise a one-line :class:`DataError` saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise DataError(
            f"{what} needs the Python package {module!r}: pip install {module} "
            "(or pip install 'mmbench[medical]')"
        ) from None


class ChannelStats:
    """Running per-channel mean and standard deviation of uint8 images scaled to [0, 1]."""

    def __init__(self, channels: int) -> None:
        self.sum = np.zeros(channels, dtype=np.float64)
        self.sumsq = np.zeros(channels, dtype=np.float64)
        self.count = 0

    def update(self, img: np.ndarray) -> None:
        """Add one ``C x ...`` uint8 array."""
        x = img.reshape(img.shape[0], -1).astype(np.float64) / 255.0
        self.sum += x.sum(axis=1)
        self.sumsq += (x * x).sum(axis=1)
        self.count += x.shape[1]

    def result(self) -> tuple[list[float], list[float]]:
        """(mean, std) per channel; (0.5, 0.25) when nothing was seen."""
        if self.count == 0:
            return [0.5] * len(self.sum), [0.25] * len(self.sum)
        mean = self.sum / self.count
        var = np.maximum(self.sumsq / self.count - mean**2, 1e-12)
        return mean.tolist(), np.sqrt(var).tolist()


def decode_into(
    out: np.ndarray,
    sources: Sequence[T | None],
    reader: Callable[[T], np.ndarray | None],
    progress: Progress = no_progress,
    description: str = "decoding images",
    stats: ChannelStats | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Decode ``sources[i]`` with ``reader`` into ``out[i]`` (zeros where unreadable); returns the ok mask.

    Decoding runs in a thread pool (Pillow and zlib release the GIL), in order, so a partially
    written cache is never observed: the caller commits only after this returns.
    """
    n = len(sources)
    ok = np.zeros(n, dtype=bool)
    workers = workers or min(8, os.cpu_count() or 1)

    def job(i: int) -> tuple[int, np.ndarray | None]:
        src = sources[i]
        return i, (None if src is None else reader(src))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, arr in progress(pool.map(job, range(n)), description=description, total=n):
            if arr is None:
                out[i] = 0
                continue
            if arr.shape != out.shape[1:]:
                raise DataError(
                    f"decoded image {sources[i]!r} has shape {arr.shape}, expected {out.shape[1:]}"
                )
            out[i] = arr
            ok[i] = True
            if stats is not None:
                stats.update(arr)
    return ok

"""Frozen-encoder mode: image features computed once per dataset x encoder x weights x image size.

With ``encoders: {freeze: true}`` (``--set encoders.freeze=true``) the image backbone does not train.
Its output is computed once for every row of every split, stored on disk as float16 ``.npy`` arrays
under ``$MMBENCH_CACHE/features/<dataset>-<key>/`` and memory-mapped by every run that needs it: all
methods, seeds and missingness cells of a grid, and later grids. Each run trains only the rest: the
projection to ``hidden``, the table encoder, and the method's own layers.

``key`` hashes what the features depend on: the dataset (adapter, its version, its options, which
include the image size, and the data fingerprint), the encoder (timm name, output stride, input
channels), the weights (timm's pretrained weights of that name; a ``pretrained_file`` by its sha256;
or, with ``pretrained: false``, a random backbone drawn with seed 0: a random-feature baseline), the
number of stages frozen, and the timm version. A cache is written into a temporary folder and
renamed into place under a file lock, like the decoded-data cache (:mod:`mmbench.data.cache`), so
concurrent workers compute it once and never read half of it.

Where the backbone is cut: a single encoder freezes every stage (and the post-norm); a shared/specific
pair (DFPL's, with ``separate_stages: N``) freezes the stages the two copies share and trains the top
``N`` stages of each copy, so the pair can still diverge; a pair that shares only its stem (DrFuse,
``dfpl-stemshared``) is refused in one line (:class:`mmbench.encoders.build.SharedSpecific`).

Absent images: a run zero-fills the inputs of absent rows. The cache stores ``f(x) - f(0)`` and the
encoder adds ``f(0)`` back (``absent_features``), so a zero-filled row yields the backbone's output
for an all-zero image, exactly what the end-to-end encoder would compute for it.

Training-time augmentation cannot apply to features computed once: a frozen spec has none
(:func:`mmbench.config.resolve` drops the card's ``augment``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.base import DataInfo, Split
from .data.cache import CacheWriter, cache_root
from .spec import RunSpec, canonical_json
from .typed import dump

#: version of the feature-cache layout and of what it computes (bump on change)
FEATURE_CACHE_VERSION = 1

#: (key) -> (features per split, f(0)): caches opened by this process
_OPEN: dict[str, tuple[dict[str, torch.Tensor], torch.Tensor]] = {}


def weights_id(cfg: Any) -> dict[str, Any]:
    """What identifies the weights of an image encoder config (hashed into the feature cache key)."""
    if not cfg.pretrained:
        return {"init": "random", "seed": 0}
    if cfg.pretrained_file:
        path = Path(cfg.pretrained_file).expanduser()
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:  # the encoder's own loader gives the one-line error
            return {"file": str(path)}
        return {"file_sha256": h.hexdigest()}
    return {"hub": cfg.name}


def feature_key(spec: RunSpec, info: DataInfo, k: int, fingerprint: dict[str, Any] | None) -> str:
    """16 hex digits identifying the frozen features of ``spec``'s image encoder cut after ``k`` stages."""
    import timm

    img = spec.encoders.image
    payload = {
        "version": FEATURE_CACHE_VERSION,
        "data": {"adapter": spec.dataset.adapter, "adapter_version": spec.dataset.version,
                 "options": dump(spec.data_options), "fingerprint": (fingerprint or {}).get("digest"),
                 "image_shape": list(info.image_shape)},
        "encoder": {"name": img.name, "output_stride": img.output_stride, "in_chans": info.image_shape[0]},
        "weights": weights_id(img), "stages": k, "timm": timm.__version__,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def frozen_encoders(pipeline: nn.Module) -> list[nn.Module]:
    """The frozen image encoders of a pipeline (those that read cached features)."""
    from .encoders.image import ImageEncoder

    return [m for m in pipeline.modules() if isinstance(m, ImageEncoder) and m.first_stage > 0]


def attach_frozen_features(pipeline: nn.Module, spec: RunSpec, info: DataInfo, splits: dict[str, Split],
                           device: torch.device) -> tuple[dict[str, Split], str | None]:
    """Splits whose image inputs are the cached features the pipeline's frozen encoders read (built
    first when absent), and whether they were ``built`` or ``reused``; the encoders get ``f(0)``."""
    encoders = frozen_encoders(pipeline)
    if not encoders or "image" not in splits["train"].inputs:
        return splits, None
    fingerprint = splits["train"].extra.get("data_fingerprint")
    status, image = "reused", {name: {} for name in splits}
    for k in sorted({e.first_stage for e in encoders}):
        feats, absent, built = frozen_features(spec, info, splits, k, fingerprint, device)
        status = "built" if built else status
        for name in splits:
            image[name][f"features{k}"] = feats[name]
        for e in encoders:
            if e.first_stage == k:
                e.set_absent_features(absent)
    out = {name: replace(sp, inputs={**sp.inputs, "image": image[name]}) for name, sp in splits.items()}
    return out, status


def frozen_features(spec: RunSpec, info: DataInfo, splits: dict[str, Split], k: int,
                    fingerprint: dict[str, Any] | None, device: torch.device
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, bool]:
    """(features per split, memory-mapped; ``f(0)``; whether this call computed them)."""
    from filelock import FileLock

    key = feature_key(spec, info, k, fingerprint)
    if key in _OPEN:
        return (*_OPEN[key], False)
    path = cache_root() / "features" / f"{spec.dataset.name}-{key}"
    built = False
    if not _complete(path, splits):
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):  # concurrent workers wait for one computation
            if not _complete(path, splits):
                _build(path, spec, info, splits, k, device, key)
                built = True
    _OPEN[key] = _read(path, splits)
    return (*_OPEN[key], built)


def _complete(path: Path, splits: dict[str, Split]) -> bool:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("rows") == {name: len(sp) for name, sp in splits.items()}


def _read(path: Path, splits: dict[str, Split]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    feats = {name: torch.from_numpy(np.load(path / f"{name}__features.npy", mmap_mode="c", allow_pickle=False))
             for name in splits}
    absent = torch.from_numpy(np.load(path / "all__absent.npy", allow_pickle=False))
    return feats, absent


def backbone_part(spec: RunSpec, info: DataInfo, k: int, device: torch.device) -> Any:
    """The frozen part of ``spec``'s image encoder (stem + ``k`` stages, + post-norm when ``k`` is all), in
    eval mode on ``device``, as a function of normalised pixels. Random weights are drawn with seed 0,
    outside the run's random stream."""
    from .encoders.image import ImageEncoder

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        enc = ImageEncoder(spec.encoders.image, 1, in_chans=info.image_shape[0])
    enc.eval().to(device)
    if device.type == "cuda" and spec.train.channels_last:
        enc = enc.to(memory_format=torch.channels_last)
    n = len(enc.stage_names)

    @torch.no_grad()
    def run(pixels: torch.Tensor) -> torch.Tensor:
        state = enc.stem({"pixels": pixels})
        for i in range(k):
            state = enc.stage(i, state)
        if k == n:
            for name in enc._post:
                state = enc.backbone.get_submodule(name)(state)
        return state.float()

    return run


def _build(path: Path, spec: RunSpec, info: DataInfo, splits: dict[str, Split], k: int, device: torch.device,
           key: str) -> None:
    run = backbone_part(spec, info, k, device)
    amp = spec.train.amp and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        absent = run(torch.zeros(1, *info.image_shape, device=device))[0]
    writer = CacheWriter(path)
    try:
        bs = spec.train.eval_batch_size
        for name, sp in splits.items():
            n = len(sp)
            out = writer.empty(name, "features", (n, *absent.shape), np.float16)
            everyone = torch.ones(n, 2, dtype=torch.bool)
            for start in range(0, n, bs):
                idx = torch.arange(start, min(n, start + bs))
                pixels = sp.batch(idx, everyone, device).inputs["image"]["pixels"]
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                    f = run(pixels)
                out[start:start + len(idx)] = (f - absent).to(torch.float16).cpu().numpy()
            out.flush()
            del out
        writer.put("all", "absent", absent.cpu().numpy().astype(np.float32))
        writer.commit({"kind": "frozen-features", "key": key, "dataset": spec.dataset.name,
                       "encoder": dump(spec.encoders.image), "stages": k,
                       "rows": {name: len(sp) for name, sp in splits.items()},
                       "shape": list(absent.shape), "dtype": "float16"})
    except BaseException:
        writer.abort()
        raise

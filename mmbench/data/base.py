"""Dataset adapter interface: what every dataset hands to the trainer.

An adapter turns a dataset card (``datasets/<name>.yaml``) into a :class:`DataInfo` and three
in-memory (or memory-mapped) :class:`Split` objects. Decoding happens once (``mmbench prepare``
caches tensors for file-backed datasets), so a batch is a vectorised index, never a Python loop
over samples: data loading is never the bottleneck.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from .batch import MODALITIES, Batch, zero_absent

Task = Literal["multiclass", "binary", "multilabel"]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TabularSchema:
    """Columns of the non-image modality when it is a table.

    ``cat_cardinalities[j]`` is the number of levels of categorical column j (codes ``0..n-1``).
    """

    cat_cardinalities: tuple[int, ...] = ()
    n_num: int = 0
    cat_names: tuple[str, ...] = ()
    num_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataInfo:
    """Static facts about a dataset that methods and encoders are built from."""

    name: str
    task: Task
    num_classes: int
    image_shape: tuple[int, ...]  # C x H x W (2-D) or C x D x H x W (3-D)
    tabular: TabularSchema | None = None
    tabular_kind: str = "table"  # "table" or "timeseries"
    timeseries_channels: int = 0
    class_names: tuple[str, ...] = ()
    primary_metric: str = "accuracy"


@dataclass
class Split:
    """All samples of one split as tensors indexed along dim 0.

    Attributes:
        inputs: modality -> named arrays (``N x ...``); images may be uint8 (scaled on batching).
        y: ``N`` long or ``N x C`` float labels.
        natural_present: ``N x M`` bool, the dataset's own availability (all True for synthetic).
        groups: optional subject ids (for group-aware splitting and reporting).
    """

    inputs: dict[str, dict[str, Tensor]]
    y: Tensor
    natural_present: Tensor
    groups: np.ndarray | None = None
    image_mean: float | Tensor = 0.5
    image_std: float | Tensor = 0.25
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def batch(self, idx: Tensor, present: Tensor, device: torch.device | str | None = None) -> Batch:
        """Gather rows ``idx`` with presence ``present[idx]`` into a zero-filled :class:`Batch`.

        Raw arrays are gathered on the CPU, moved to ``device`` (uint8 images stay uint8 until
        then; pinned, non-blocking copies on CUDA), and only there converted to float, normalised
        and zero-filled where absent.
        """
        pres = present[idx]
        inputs: dict[str, dict[str, Tensor]] = {}
        for mod, parts in self.inputs.items():
            d = {}
            for key, arr in parts.items():
                t = arr[idx]
                if device is not None:
                    t = to_device(t, device)
                if mod == "image" and key == "pixels":
                    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
                    mean, std = self.image_mean, self.image_std
                    if isinstance(mean, Tensor):
                        mean, std = mean.to(t.device), std.to(t.device)
                    t = (t - mean) / std
                d[key] = t
            inputs[mod] = d
        y, index = self.y[idx], idx
        if device is not None:
            pres, y, index = to_device(pres, device), to_device(y, device), to_device(index, device)
        return Batch(inputs=zero_absent(inputs, pres), present=pres, y=y, index=index)


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """A host tensor on ``device``; to CUDA through pinned memory with a non-blocking copy, so
    gathering the next batch on the CPU overlaps the current step on the GPU (no host-device sync)."""
    device = torch.device(device)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class DatasetAdapter(ABC):
    """Builds splits from a dataset card's ``options``; registered by ``@register_dataset``."""

    #: the adapter's typed options (a dataclass); unknown card keys are an error
    Options: type = object
    #: behaviour version, hashed into every run id: bump it when a change alters the data produced
    version: ClassVar[int] = 1

    def __init__(self, options: Any, data_root: str | None = None) -> None:
        self.options = options
        self.data_root = data_root

    @abstractmethod
    def load(self) -> tuple[DataInfo, dict[str, Split]]:
        """Return the dataset's info and its ``train``/``val``/``test`` splits."""

    def fingerprint(self) -> dict[str, Any] | None:
        """A cheap fingerprint of the input files (sizes, modification times, image counts), or None for
        generated data; file-backed adapters key their cache on it and runs record it."""
        return None

    def ceiling(self) -> dict[str, float] | None:
        """Best achievable primary metric per missing pattern, where the generative model is known."""
        return None

    def available(self) -> bool:
        """Whether the data is found (for ``mmbench ls datasets``)."""
        return True


def check_modalities(split: Split) -> None:
    """Sanity check used by tests: every split has a presence column per modality slot."""
    assert split.natural_present.shape == (len(split), len(MODALITIES))

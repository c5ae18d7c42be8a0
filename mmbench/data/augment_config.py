"""Typed training-time image augmentation settings (the ``augment:`` block of a dataset card), torch-free.

The transforms themselves are in :mod:`mmbench.data.augment`; they run on the device, per sample, on
the decoded training batches, and never in evaluation.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..errors import ConfigError
from ..typed import Fraction, NonNegFloat, PosFloat, PosInt, config

Pair = tuple[PosFloat, PosFloat]
FractionPair = tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]]


@config
class AugmentConfig:
    """Per-sample training transforms (torchvision's semantics; every one off by default).

    Geometric, in one resampling: ``RandomAffine`` (``degrees``, ``translate``, ``scale``), then
    ``RandomResizedCrop`` (``crop_scale``, ``crop_ratio``; the output keeps the card's image size),
    then ``RandomHorizontalFlip`` (``hflip``). Photometric, after it, in this fixed order: colour
    jitter (``brightness``, ``contrast``, ``saturation``; applied with probability ``jitter_p``),
    ``RandomGrayscale`` (``grayscale``), Gaussian blur (``blur_p``, ``blur_kernel``, ``blur_sigma``).
    ``p`` is the probability that a training image is augmented at all (TIP's ``augmentation_rate``).
    """

    p: Fraction = 1.0
    crop_scale: FractionPair | None = None
    crop_ratio: Pair = (3 / 4, 4 / 3)
    hflip: Fraction = 0.0
    degrees: Annotated[float, Field(ge=0, le=180)] = 0.0
    translate: Fraction = 0.0
    scale: Pair | None = None
    brightness: NonNegFloat = 0.0
    contrast: NonNegFloat = 0.0
    saturation: NonNegFloat = 0.0
    jitter_p: Fraction = 1.0
    grayscale: Fraction = 0.0
    blur_p: Fraction = 0.0
    blur_kernel: PosInt = 29
    blur_sigma: Pair = (0.1, 2.0)

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio", "scale", "blur_sigma"):
            lo_hi = getattr(self, name)
            if lo_hi is not None and lo_hi[0] > lo_hi[1]:
                raise ConfigError(f"{name} must be a range [low, high] with low <= high, got {list(lo_hi)}")
        if self.blur_kernel % 2 == 0:
            raise ConfigError(f"blur_kernel must be odd, got {self.blur_kernel}")

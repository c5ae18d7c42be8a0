"""Typed encoder settings (the ``encoders:`` block of a dataset card), torch-free.

One config per registered encoder kind; the card loader picks the class from each entry's ``kind``.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import Field

from ..errors import ConfigError
from ..typed import Bool, Float, PosFloat, PosInt, config

Dropout = Annotated[Float, Field(ge=0, lt=1)]


@config
class ImageEncoderConfig:
    """A timm image backbone: ``name`` is any ``timm.list_models()`` entry (``resnet50`` in paper
    configs; the tiny ``test_resnet`` by default on CPU). ``output_stride`` keeps a token grid at
    small image sizes (ResNet-family models); ``None`` keeps the model's default."""

    kind: Literal["timm"] = "timm"
    name: str = "test_resnet"
    pretrained: Bool = False
    output_stride: Literal[8, 16, 32] | None = 8
    drop_rate: Dropout = 0.0
    #: local checkpoint of the pretrained weights (``.pth`` / ``.safetensors``, as timm saves them), for
    #: machines without access to the Hugging Face hub; needs ``pretrained: true``
    pretrained_file: str | None = None

    def __post_init__(self) -> None:
        if self.pretrained_file is not None and not self.pretrained:
            raise ConfigError(f"pretrained_file {self.pretrained_file!r} needs pretrained: true")


@config
class TabularEncoderConfig:
    """Feature tokenizer + transformer (FT-Transformer style) over table columns."""

    kind: Literal["ft_transformer"] = "ft_transformer"
    depth: PosInt = 2
    heads: PosInt = 4
    ffn_mult: PosFloat = 2.0
    dropout: Dropout = 0.1


@config
class EHREncoderConfig:
    """Settings of the EHR transformer (defaults: DrFuse's MIMIC setting, ``nhead`` 4, dropout 0.3)."""

    kind: Literal["ehr_transformer"] = "ehr_transformer"
    feature_depth: Annotated[int, Field(ge=0, strict=True)] = 1
    depth: Annotated[int, Field(ge=0, strict=True)] = 1
    heads: PosInt = 4
    ffn_dim: PosInt = 2048
    dropout: Dropout = 0.3
    max_len: PosInt = 350
    norm_first: Bool = False


@config
class ResNet3DConfig:
    """Settings of the 3-D ResNet (defaults: ResNet-10 widths of MedicalNet / MONAI)."""

    kind: Literal["resnet3d"] = "resnet3d"
    layers: tuple[PosInt, PosInt, PosInt, PosInt] = (1, 1, 1, 1)
    widths: tuple[PosInt, PosInt, PosInt, PosInt] = (64, 128, 256, 512)
    stem_kernel: PosInt = 7
    impl: Literal["native", "monai"] = "native"


@dataclasses.dataclass(frozen=True)
class EncodersConfig:
    """One encoder config per modality slot, and the frozen-encoder switch.

    Each slot holds the config of the registered encoder named by its ``kind`` (``timm``,
    ``ft_transformer``, ...); :func:`mmbench.config.encoders_config` picks the class from the kind.
    ``freeze`` (``encoders: {freeze: true}``, ``--set encoders.freeze=true``): the image backbone is
    frozen and its features are computed once per dataset x encoder x weights x image size and
    cached on disk (:mod:`mmbench.features`); each run trains only the rest (the projection to
    ``hidden``, the table encoder, the method's own layers). Only ``timm`` image encoders can be frozen.
    """

    image: Any = dataclasses.field(default_factory=ImageEncoderConfig)
    tabular: Any = dataclasses.field(default_factory=TabularEncoderConfig)
    freeze: bool = False

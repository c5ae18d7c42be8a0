"""Typed encoder settings (the ``encoders:`` block of a dataset card)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageEncoderConfig:
    """A timm image backbone: ``name`` is any ``timm.list_models()`` entry (``resnet50`` in paper
    configs; the tiny ``test_resnet`` by default on CPU). ``output_stride`` keeps a token grid at
    small image sizes (ResNet-family models); ``None`` keeps the model's default."""

    kind: str = "timm"
    name: str = "test_resnet"
    pretrained: bool = False
    output_stride: int | None = 8
    drop_rate: float = 0.0


@dataclass(frozen=True)
class TabularEncoderConfig:
    """Feature tokenizer + transformer (FT-Transformer style) over table columns."""

    kind: str = "ft_transformer"
    depth: int = 2
    heads: int = 4
    ffn_mult: float = 2.0
    dropout: float = 0.1


@dataclass(frozen=True)
class EncodersConfig:
    """One encoder config per modality slot.

    Each is the ``Config`` dataclass of the registered encoder named by its ``kind`` (``timm``,
    ``ft_transformer``, ...); the card loader picks the class from the kind.
    """

    image: Any = field(default_factory=ImageEncoderConfig)
    tabular: Any = field(default_factory=TabularEncoderConfig)

"""Encoders: image (timm), tabular (feature tokenizer + transformer); each gives tokens and pooled."""

from .build import build_encoder, build_shared_specific
from .config import EncodersConfig, ImageEncoderConfig, TabularEncoderConfig
from .image import ImageEncoder
from .tabular import TabularEncoder

__all__ = ["EncodersConfig", "ImageEncoderConfig", "TabularEncoderConfig", "ImageEncoder",
           "TabularEncoder", "build_encoder", "build_shared_specific"]

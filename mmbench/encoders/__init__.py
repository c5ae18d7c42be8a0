"""Encoders: image (timm), tabular (feature tokenizer + transformer); each gives tokens and pooled."""

from .config import EncodersConfig, ImageEncoderConfig, TabularEncoderConfig
from .image import ImageEncoder
from .tabular import TabularEncoder
from .build import build_encoder, build_shared_specific

__all__ = ["EncodersConfig", "ImageEncoderConfig", "TabularEncoderConfig", "ImageEncoder",
           "TabularEncoder", "build_encoder", "build_shared_specific"]

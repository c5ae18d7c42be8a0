"""Encoders: image (timm 2-D, small 3-D ResNet), tabular (feature tokenizer + transformer), EHR time series.

Each gives tokens ``B x L x D`` and pooled ``B x D``; importing this package registers them all.
"""

from . import ehr, image3d  # noqa: F401,E402  (register ehr_transformer, resnet3d)
from .build import build_encoder, build_shared_specific
from .config import EncodersConfig, ImageEncoderConfig, TabularEncoderConfig
from .image import ImageEncoder
from .tabular import TabularEncoder

__all__ = ["EncodersConfig", "ImageEncoderConfig", "TabularEncoderConfig", "ImageEncoder",
           "TabularEncoder", "build_encoder", "build_shared_specific"]

"""Encoders: image (timm 2-D, small 3-D ResNet), tabular (feature tokenizer + transformer), EHR time series.

Each gives tokens ``B x L x D`` and pooled ``B x D``. Registered lazily with their torch-free configs
(:mod:`mmbench.encoders.config`); :mod:`mmbench.encoders.build` builds them for methods.
"""

from ..registry import ENCODERS
from . import config as _c

ENCODERS.lazy("timm", "mmbench.encoders.image:ImageEncoder", _c.ImageEncoderConfig)
ENCODERS.lazy("ft_transformer", "mmbench.encoders.tabular:TabularEncoder", _c.TabularEncoderConfig)
ENCODERS.lazy("ehr_transformer", "mmbench.encoders.ehr:EHRTransformer", _c.EHREncoderConfig)
ENCODERS.lazy("resnet3d", "mmbench.encoders.image3d:ResNet3DEncoder", _c.ResNet3DConfig)

"""2-D image encoder built with timm by name: tokens ``B x L x D`` and pooled ``B x D``."""

from __future__ import annotations

import logging

import timm
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import register_encoder
from .config import ImageEncoderConfig


def create_timm_backbone(cfg: ImageEncoderConfig, in_chans: int = 3) -> nn.Module:
    """``timm.create_model`` without a classifier or pooling; clear errors for bad names/offline."""
    if cfg.name not in timm.list_models() and cfg.name not in timm.list_models(pretrained=True):
        import difflib

        close = difflib.get_close_matches(cfg.name, timm.list_models(), n=3)
        raise ConfigError(f"unknown timm image encoder {cfg.name!r}" +
                          (f"; did you mean {', '.join(close)}?" if close else ""))
    kwargs: dict = {"pretrained": cfg.pretrained, "num_classes": 0, "global_pool": "",
                    "in_chans": in_chans, "drop_rate": cfg.drop_rate}
    if cfg.output_stride is not None:
        kwargs["output_stride"] = cfg.output_stride
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # our one-line error replaces the hub's retry warnings
    try:
        return timm.create_model(cfg.name, **kwargs)
    except TypeError:
        kwargs.pop("output_stride", None)  # models without dilation support
        return timm.create_model(cfg.name, **kwargs)
    except Exception as exc:  # network / hub failures when pretrained=True
        if cfg.pretrained:
            raise ConfigError(
                f"could not load pretrained weights for timm model {cfg.name!r} ({type(exc).__name__}); "
                "this machine may be offline: put the weights in the Hugging Face cache or set "
                "encoders.image.pretrained=false") from None
        raise
    finally:
        hub_logger.setLevel(level)


def feature_map_to_tokens(fmap: Tensor) -> Tensor:
    """``B x C x H x W`` (CNN) or ``B x L x C`` (ViT) features -> ``B x L x C`` tokens."""
    if fmap.dim() == 4:
        return fmap.flatten(2).transpose(1, 2)
    if fmap.dim() == 3:
        return fmap
    raise ValueError(f"unexpected feature shape {tuple(fmap.shape)}")


@register_encoder("timm")
class ImageEncoder(nn.Module):
    """timm backbone -> feature-map tokens projected to ``dim``; pooled = mean over tokens."""

    Config = ImageEncoderConfig

    def __init__(self, cfg: ImageEncoderConfig, dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = create_timm_backbone(cfg, in_chans)
        self.proj = nn.Linear(self.backbone.num_features, dim)
        self.dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Encode ``inputs["pixels"]``; returns (tokens ``B x L x D``, pooled ``B x D``)."""
        tokens = self.proj(feature_map_to_tokens(self.backbone.forward_features(inputs["pixels"])))
        return tokens, tokens.mean(dim=1)


def torch_threads_hint() -> int:
    """Number of intra-op threads torch uses (reported in records)."""
    return torch.get_num_threads()

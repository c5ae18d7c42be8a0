"""2-D image encoder built with timm by name: tokens ``B x L x D`` and pooled ``B x D``."""

from __future__ import annotations

import logging

import timm
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import register_encoder
from .config import ImageEncoderConfig
from .staged import StagedEncoder


def create_timm_backbone(cfg: ImageEncoderConfig, in_chans: int = 3) -> nn.Module:
    """``timm.create_model`` without a classifier or pooling; clear errors for bad names/offline."""
    if cfg.name not in timm.list_models() and cfg.name not in timm.list_models(pretrained=True):
        import difflib

        close = difflib.get_close_matches(cfg.name, timm.list_models(), n=3)
        raise ConfigError(f"unknown timm image encoder {cfg.name!r}" +
                          (f"; did you mean {', '.join(close)}?" if close else ""))
    kwargs: dict = {"pretrained": cfg.pretrained, "num_classes": 0, "global_pool": "",
                    "in_chans": in_chans, "drop_rate": cfg.drop_rate}
    if cfg.pretrained_file:  # offline: timm's own loader (classifier dropped, input channels adapted)
        from pathlib import Path

        path = Path(cfg.pretrained_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"encoders.image.pretrained_file {cfg.pretrained_file!r}: no such file (expected "
                              f"the {cfg.name} weights as saved by timm/torch, .pth or .safetensors)")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
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
    except Exception as exc:  # network / hub failures when pretrained=True, an unreadable file
        if cfg.pretrained_file:
            raise ConfigError(
                f"encoders.image.pretrained_file {cfg.pretrained_file!r}: not loadable as {cfg.name!r} weights "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
        if cfg.pretrained:
            raise ConfigError(
                f"could not load pretrained weights for timm model {cfg.name!r} ({type(exc).__name__}); "
                "this machine may be offline: put the weights in the Hugging Face cache, or set "
                "encoders.image.pretrained_file to a local copy of them, or encoders.image.pretrained=false") from None
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


def timm_layout(backbone: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(stem, stages, post) module names that ``backbone.forward_features`` runs, in order.

    ResNet family (``conv1 bn1 act1 maxpool layer1..4``) and ConvNeXt-style models (``stem``,
    ``stages.i``, ``norm_pre``) are split by stage; any other timm model is one opaque stage
    (``forward_features``), so a shared/specific pair of it shares nothing.
    """
    from timm.models.convnext import ConvNeXt
    from timm.models.resnet import ResNet

    if isinstance(backbone, ResNet):
        return ("conv1", "bn1", "act1", "maxpool"), ("layer1", "layer2", "layer3", "layer4"), ()
    if isinstance(backbone, ConvNeXt):
        return ("stem",), tuple(f"stages.{i}" for i in range(len(backbone.stages))), ("norm_pre",)
    return (), (), ()


@register_encoder("timm")
class ImageEncoder(StagedEncoder):
    """timm backbone -> feature-map tokens projected to ``dim``; pooled = mean over tokens."""

    Config = ImageEncoderConfig

    def __init__(self, cfg: ImageEncoderConfig, dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = create_timm_backbone(cfg, in_chans)
        self.proj = nn.Linear(self.backbone.num_features, dim)
        self.dim = dim
        stem, stages, self._post = timm_layout(self.backbone)
        self.stem_names = tuple(f"backbone.{n}" for n in stem)
        self.stage_names = tuple(f"backbone.{n}" for n in stages) or ("backbone",)

    def freeze_below(self, k: int) -> None:
        """Frozen-encoder mode: the stem and the first ``k`` stages (and the post-norm, when ``k`` is every
        stage) are computed once outside this module and cached (:mod:`mmbench.features`). They are
        removed here, so they neither train nor occupy memory; :meth:`stem` then reads their output
        from ``inputs["features<k>"]``, which the cache stores relative to the output for an all-zero
        (absent) image, ``absent_features``: a zero-filled absent row gives exactly that output, as
        the end-to-end encoder would compute it."""
        n = len(self.stage_names)
        if not 0 < k <= n:
            raise ValueError(f"freeze_below({k}): expected 1..{n}")
        dropped = (*self.stem_names, *self.stage_names[:k])
        if k == n:
            dropped += tuple(f"backbone.{p}" for p in self._post)
            self._post = ()
        for name in dropped:
            *path, leaf = name.split(".")
            setattr(self.get_submodule(".".join(path)) if path else self, leaf, nn.Identity())
        self.first_stage = k
        self.register_buffer("absent_features", torch.zeros(0))

    @property
    def frozen_key(self) -> str:
        """Input key of the cached features this encoder reads (frozen mode)."""
        return f"features{self.first_stage}"

    def set_absent_features(self, value: Tensor) -> None:
        """The frozen part's output for an all-zero image (one row), from the feature cache."""
        self.absent_features = value.detach().to(self.proj.weight.device, torch.float32).clone()

    def stem(self, inputs: dict[str, Tensor]) -> Tensor:
        """The backbone's stem (identity for an opaque model); in frozen mode, the cached features."""
        if self.first_stage:
            return inputs[self.frozen_key].float() + self.absent_features
        x = inputs["pixels"]
        for name in self.stem_names:
            x = self.get_submodule(name)(x)
        return x

    def stage(self, i: int, state: Tensor) -> Tensor:
        """Stage ``i`` of the backbone (the whole ``forward_features`` for an opaque model)."""
        if self.stage_names == ("backbone",):
            return self.backbone.forward_features(state)
        return super().stage(i, state)

    def finish(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Post-norm (ConvNeXt), then tokens projected to ``dim`` and their mean."""
        for name in self._post:
            state = self.backbone.get_submodule(name)(state)
        tokens = self.proj(feature_map_to_tokens(state))
        return tokens, tokens.mean(dim=1)


def torch_threads_hint() -> int:
    """Number of intra-op threads torch uses (reported in records)."""
    return torch.get_num_threads()

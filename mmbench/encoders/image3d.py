"""3-D image encoder (``resnet3d``): a small 3-D ResNet for volumes (ADNI T1 MRI), tokens and pooled.

Input ``{"pixels": B x C x D x H x W}``. The architecture is the 3-D ResNet of Hara et al. (CVPR
2018) as used by MedicalNet and MONAI's ``ResNet``: a ``7^3`` stride-2 stem convolution, BatchNorm,
ReLU and a ``3^3`` stride-2 max-pool, then four stages of basic residual blocks (``layers`` per
stage; ``(1, 1, 1, 1)`` is ResNet-10, ``(2, 2, 2, 2)`` ResNet-18) with ``widths`` channels and
strides 1, 2, 2, 2. The last feature map (``4^3`` at 128^3 input) is flattened into tokens and
projected to ``dim``; the pooled vector is the token mean.

``impl: monai`` builds MONAI's ``ResNet`` with the same settings (only if MONAI is installed; it
is optional because its import alone takes seconds; its shortcut convolutions also carry a bias);
the default is this file's own network.
Module names mirror timm's ResNet (``backbone.conv1``, ``bn1``, ``act1``, ``maxpool``, ``layer1..4``):
the stem is ``conv1 .. maxpool`` and the stages are ``layer1..4``, as for 2-D images.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import register_encoder
from .config import ResNet3DConfig
from .staged import StagedEncoder


class BasicBlock3D(nn.Module):
    """Two ``3^3`` convolutions with BatchNorm and a residual connection (1x1x1 projection when needed)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.act = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: Tensor) -> Tensor:
        """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``."""
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + (x if self.downsample is None else self.downsample(x)))


class ResNet3DBackbone(nn.Module):
    """Stem + four stages; ``forward_features`` returns the last ``B x C x d x h x w`` map."""

    def __init__(self, cfg: ResNet3DConfig, in_chans: int) -> None:
        super().__init__()
        k = cfg.stem_kernel
        self.conv1 = nn.Conv3d(in_chans, cfg.widths[0], k, 2, k // 2, bias=False)
        self.bn1 = nn.BatchNorm3d(cfg.widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        cin = cfg.widths[0]
        for i, (n, w) in enumerate(zip(cfg.layers, cfg.widths, strict=False)):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock3D(cin, w, (1 if i == 0 else 2) if b == 0 else 1))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature map of the last stage."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class MonaiBackbone(nn.Module):
    """MONAI's 3-D ``ResNet`` (basic blocks) without its pooling and classifier."""

    def __init__(self, cfg: ResNet3DConfig, in_chans: int) -> None:
        super().__init__()
        try:
            from monai.networks.nets import ResNet
        except ModuleNotFoundError:
            raise ConfigError(
                "encoders.image.impl=monai needs MONAI: pip install monai (or use impl: native)"
            ) from None
        net = ResNet(
            block="basic",
            layers=list(cfg.layers),
            block_inplanes=list(cfg.widths),
            spatial_dims=3,
            n_input_channels=in_chans,
            conv1_t_size=cfg.stem_kernel,
            conv1_t_stride=2,
            feed_forward=False,
        )
        for name in ("conv1", "bn1", "act", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, "act1" if name == "act" else name, getattr(net, name))
        self.num_features = cfg.widths[-1]

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature map of the last stage."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@register_encoder("resnet3d")
class ResNet3DEncoder(StagedEncoder):
    """3-D ResNet -> feature-map tokens projected to ``dim``; pooled = mean over tokens."""

    Config = ResNet3DConfig
    stem_names = ("backbone.conv1", "backbone.bn1", "backbone.act1", "backbone.maxpool")
    stage_names = ("backbone.layer1", "backbone.layer2", "backbone.layer3", "backbone.layer4")

    def __init__(self, cfg: ResNet3DConfig, dim: int, in_chans: int = 1) -> None:
        super().__init__()
        if not isinstance(cfg, ResNet3DConfig):
            cfg = ResNet3DConfig()
        self.cfg = cfg
        self.backbone = (
            MonaiBackbone(cfg, in_chans) if cfg.impl == "monai" else ResNet3DBackbone(cfg, in_chans)
        )
        self.proj = nn.Linear(self.backbone.num_features, dim)
        self.dim = dim

    def stem(self, inputs: dict[str, Tensor]) -> Tensor:
        """``conv1 -> bn1 -> act1 -> maxpool`` on ``inputs["pixels"]`` (``B x C x D x H x W``)."""
        b = self.backbone
        return b.maxpool(b.act1(b.bn1(b.conv1(inputs["pixels"]))))

    def finish(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """The last feature map flattened into tokens, projected to ``dim``; pooled = their mean."""
        tokens = self.proj(torch.flatten(state, 2).transpose(1, 2))
        return tokens, tokens.mean(dim=1)

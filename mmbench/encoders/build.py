"""Encoder factories used by methods: one encoder per modality, or shared + specific pairs."""

from __future__ import annotations

import copy

from torch import Tensor, nn

from ..data.base import DataInfo
from ..registry import ENCODERS
from .config import EncodersConfig


def build_encoder(modality: str, info: DataInfo, cfg: EncodersConfig, dim: int) -> nn.Module:
    """An encoder for ``modality`` whose ``forward(inputs) -> (tokens B x L x dim, pooled B x dim)``."""
    if modality == "image":
        return ENCODERS.get(cfg.image.kind)(cfg.image, dim, in_chans=info.image_shape[0])
    if modality == "tabular":
        kind = cfg.tabular.kind
        cls = ENCODERS.get(kind)
        if info.tabular_kind == "table":
            return cls(cfg.tabular, info.tabular, dim)
        return cls(cfg.tabular, info, dim)
    raise ValueError(f"unknown modality {modality!r}")


class SharedSpecific(nn.Module):
    """Two encoders of identical architecture: the shared one and the specific one.

    DrFuse and DFPL use "two encoders per modality with identical architecture sharing lower
    layers". The lower part is shared *by parameters*: the modules named in ``shared_prefixes``
    (e.g. the timm stem and first stage, or the tabular tokenizer) are the same objects in both
    copies (their forward runs in each copy; they are the cheap lower part).
    """

    def __init__(self, base: nn.Module, shared_prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.shared = base
        self.specific = copy.deepcopy(base)
        for name in shared_prefixes:
            parent_s, parent_p, leaf = _resolve(self.shared, self.specific, name)
            setattr(parent_p, leaf, getattr(parent_s, leaf))

    def forward(self, inputs: dict[str, Tensor]) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Returns ((shared tokens, shared pooled), (specific tokens, specific pooled))."""
        return self.shared(inputs), self.specific(inputs)


def _resolve(a: nn.Module, b: nn.Module, dotted: str) -> tuple[nn.Module, nn.Module, str]:
    *path, leaf = dotted.split(".")
    for p in path:
        a, b = getattr(a, p), getattr(b, p)
    return a, b, leaf


#: Default lower layers shared between the two copies, by encoder kind (an encoder class may
#: declare its own ``shared_prefixes`` instead).
DEFAULT_SHARED = {
    "timm": ("backbone.conv1", "backbone.bn1", "backbone.act1", "backbone.maxpool", "backbone.layer1"),
    "ft_transformer": ("tokenizer",),
}


def build_shared_specific(modality: str, info: DataInfo, cfg: EncodersConfig, dim: int) -> SharedSpecific:
    """A shared/specific encoder pair for ``modality`` with the kind's default shared lower layers."""
    base = build_encoder(modality, info, cfg, dim)
    kind = cfg.image.kind if modality == "image" else cfg.tabular.kind
    declared = getattr(type(base), "shared_prefixes", None) or DEFAULT_SHARED.get(kind, ())
    prefixes = tuple(p for p in declared if _has(base, p))
    return SharedSpecific(base, prefixes)


def _has(module: nn.Module, dotted: str) -> bool:
    for p in dotted.split("."):
        if not hasattr(module, p):
            return False
        module = getattr(module, p)
    return True

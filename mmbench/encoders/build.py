"""Encoder factories used by methods: one encoder per modality, or shared + specific pairs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..data.base import DataInfo
from ..errors import ConfigError
from ..registry import ENCODERS
from .config import EncodersConfig
from .staged import StagedEncoder


def build_encoder(modality: str, info: DataInfo, cfg: EncodersConfig, dim: int,
                  freeze: bool | None = None) -> StagedEncoder:
    """An encoder for ``modality`` whose ``forward(inputs) -> (tokens B x L x dim, pooled B x dim)``.

    With ``cfg.freeze`` (or ``freeze``) the image encoder's backbone is frozen: its features come from
    the frozen-feature cache (:mod:`mmbench.features`) and only its projection to ``dim`` trains.
    """
    if modality == "image":
        enc = ENCODERS.get(cfg.image.kind)(cfg.image, dim, in_chans=info.image_shape[0])
        if cfg.freeze if freeze is None else freeze:
            _freeze(enc, len(enc.stage_names))
        return enc
    if modality == "tabular":
        kind = cfg.tabular.kind
        cls = ENCODERS.get(kind)
        if info.tabular_kind == "table":
            return cls(cfg.tabular, info.tabular, dim)
        return cls(cfg.tabular, info, dim)
    raise ValueError(f"unknown modality {modality!r}")


def _freeze(enc: StagedEncoder, k: int) -> None:
    if not hasattr(enc, "freeze_below"):
        raise ConfigError(f"encoders.freeze: {type(enc).__name__} cannot be frozen (only timm image encoders can)")
    enc.freeze_below(k)


def check_separate(separate: int | str) -> None:
    """``separate_stages`` must be a positive integer or ``"all"``."""
    if separate != "all" and (isinstance(separate, bool) or not isinstance(separate, int) or separate < 1):
        raise ConfigError(f"separate_stages must be a positive integer or 'all', got {separate!r}")


class SharedSpecific(nn.Module):
    """Two encoders of identical architecture, the shared one and the specific one, whose lower
    layers are shared: their stem and their lower stages are the same modules, computed once.

    DrFuse and DFPL use "two encoders per modality with identical architecture sharing lower
    layers". Both copies are built (and initialised) independently by ``build``; the stem and all
    but the top ``separate`` stages of the specific copy are then replaced by the shared copy's
    modules. ``separate="all"`` shares the stem only (DrFuse's official code: the ResNet stem
    ``conv1 + bn1``, the EHR embedding and feature layer). An encoder that is one opaque stage
    (a timm model outside the ResNet / ConvNeXt families) shares nothing.
    """

    def __init__(self, build: Callable[[], StagedEncoder], separate: int | str = "all", freeze: bool = False) -> None:
        super().__init__()
        self.shared, self.specific = build(), build()
        if not isinstance(self.shared, StagedEncoder):
            raise ConfigError(f"encoder {type(self.shared).__name__} is not a StagedEncoder: shared/specific "
                              "pairs need its stem and stage names (see docs/adding.md#an-encoder)")
        check_separate(separate)
        n = len(self.shared.stage_names)
        self.num_shared = 0 if separate == "all" else max(0, n - int(separate))
        self.tied = (*self.shared.stem_names, *self.shared.stage_names[: self.num_shared])
        for name in self.tied:
            parent, leaf = _parent(self.shared, name)
            setattr(_parent(self.specific, name)[0], leaf, getattr(parent, leaf))
        if freeze:
            # frozen-encoder mode: the shared lower part is frozen and cached; the top stages of both
            # copies stay trainable, so the pair can still diverge. A pair that shares only its stem
            # would be two identical frozen encoders: refused.
            if self.num_shared == 0:
                raise ConfigError(
                    f"encoders.freeze: this shared/specific encoder pair (separate_stages: {separate}) shares only "
                    "its stem, so frozen features would make its two image encoders identical; set "
                    "method.params.separate_stages=1 (the top stage of each copy then trains) or train end to end")
            for enc in (self.shared, self.specific):
                _freeze(enc, self.num_shared)

    def forward(self, inputs: dict[str, Tensor]) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Returns ((shared tokens, shared pooled), (specific tokens, specific pooled))."""
        state = self.shared.stem(inputs)
        for i in range(self.shared.first_stage, self.num_shared):
            state = self.shared.stage(i, state)
        return self._top(self.shared, state), self._top(self.specific, state)

    def _top(self, enc: StagedEncoder, state: Any) -> tuple[Tensor, Tensor]:
        for i in range(self.num_shared, len(enc.stage_names)):
            state = enc.stage(i, state)
        return enc.finish(state)


def _parent(module: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    """The module holding the attribute ``dotted`` (a submodule or parameter path), and its name."""
    *path, leaf = dotted.split(".")
    return (module.get_submodule(".".join(path)) if path else module), leaf


def build_shared_specific(modality: str, info: DataInfo, cfg: EncodersConfig, dim: int,
                          separate: int | str = "all") -> SharedSpecific:
    """A shared/specific encoder pair for ``modality``; the top ``separate`` stages are not shared.
    With ``cfg.freeze`` the shared image stages are frozen (cached) and the separate ones train."""
    return SharedSpecific(lambda: build_encoder(modality, info, cfg, dim, freeze=False), separate,
                          freeze=cfg.freeze and modality == "image")

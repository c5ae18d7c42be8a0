"""EHR time-series encoder (``ehr_transformer``): DrFuse's EHR branch as a token encoder.

Input ``{"values": B x T x C, "lengths": B}`` (MIMIC: C = 76 discretised channels, T <= 48 hourly
steps, zero-padded). Following DrFuse (Yao et al., AAAI 2024, ``models/ehr_transformer.py``):
``Linear(C -> d)`` + a learnable positional table (``max_len`` rows, initialised U(-0.1, 0.1)) ->
``feature_depth`` transformer layers (the lower part, shared between DrFuse/DFPL's shared and
specific copies) -> ``depth`` further layers, all post-norm with a key-padding mask from
``lengths``. Tokens are the per-step outputs (zero at padded steps); the pooled vector is their
masked mean over valid steps (zero for a row of length 0, e.g. an absent modality).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.base import DataInfo
from ..registry import register_encoder
from .config import EHREncoderConfig
from .staged import StagedEncoder


def _stack(dim: int, cfg: EHREncoderConfig, n: int) -> nn.Module:
    if n == 0:
        return nn.Identity()
    layer = nn.TransformerEncoderLayer(
        dim, cfg.heads, cfg.ffn_dim, cfg.dropout, batch_first=True, norm_first=cfg.norm_first
    )
    return nn.TransformerEncoder(layer, n, enable_nested_tensor=False)


@register_encoder("ehr_transformer")
class EHRTransformer(StagedEncoder):
    """Linear embedding + learnable positions + transformer with a key-padding mask; tokens and pooled.

    Stem: the embedding, the positions and the ``feature_depth`` feature layers (DrFuse's shared
    ``model_feat``); stages: the ``depth`` further layers; finish: the masked mean.
    """

    Config = EHREncoderConfig

    def __init__(self, cfg: EHREncoderConfig, info: DataInfo, dim: int) -> None:
        super().__init__()
        if not isinstance(cfg, EHREncoderConfig):  # a generic tabular config: keep the shared fields
            cfg = EHREncoderConfig(**{k: getattr(cfg, k) for k in ("heads", "dropout") if hasattr(cfg, k)})
        channels = info.timeseries_channels
        if channels <= 0:
            raise ValueError(
                f"ehr_transformer needs DataInfo.timeseries_channels > 0 (dataset {info.name!r})"
            )
        self.cfg = cfg
        self.embed = nn.Linear(channels, dim)
        self.pos = nn.Parameter(torch.empty(1, cfg.max_len, dim).uniform_(-0.1, 0.1))
        self.feature = _stack(dim, cfg, cfg.feature_depth)
        self.layers = _stack(dim, cfg, cfg.depth)
        self.dim = dim
        self.stem_names = ("embed", "pos", "feature")
        self.stage_names = tuple(f"layers.layers.{i}" for i in range(cfg.depth))

    def stem(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(``B x T x D`` states after the feature layers, valid steps ``B x T``, attention keys ``B x T``)."""
        x = inputs["values"].float()
        T = x.shape[1]
        if T > self.cfg.max_len:
            raise ValueError(f"sequence of {T} steps exceeds ehr_transformer max_len={self.cfg.max_len}")
        steps = torch.arange(T, device=x.device)
        lengths = inputs["lengths"].to(x.device).long()
        valid = steps.unsqueeze(0) < lengths.unsqueeze(1)  # B x T
        # A row with no valid step (absent modality) keeps its first key open so attention stays finite.
        keys = valid.clone()
        keys[:, 0] = True
        h = self.embed(x) + self.pos[:, :T]
        if isinstance(self.feature, nn.TransformerEncoder):
            h = self.feature(h, src_key_padding_mask=~keys)
        return h, valid, keys

    def stage(self, i: int, state: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Transformer layer ``i`` with the key-padding mask."""
        h, valid, keys = state
        return self.layers.layers[i](h, src_key_padding_mask=~keys), valid, keys

    def finish(self, state: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Tokens zeroed at padded steps and their masked mean (zero for a row of length 0)."""
        h, valid, _ = state
        w = valid.unsqueeze(-1).to(h.dtype)
        tokens = h * w
        pooled = tokens.sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return tokens, pooled

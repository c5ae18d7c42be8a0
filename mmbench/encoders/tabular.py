"""Tabular encoder: per-column tokenizer (categorical embeddings, continuous projections) + transformer.

Follows FT-Transformer (Gorishniy et al., 2021): continuous column j becomes ``x_j * W_j + b_j``,
categorical column j an embedding row of its own table; a learned [CLS] token is prepended and the
sequence goes through pre-norm transformer layers. Tokens are the column outputs (``B x L x D``), the
pooled vector is the [CLS] output. Missing *cells* (``num_mask`` / ``cat_mask``, True = observed) are
replaced by a learned mask token and excluded as attention keys (TIP's scheme).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.base import TabularSchema
from ..registry import register_encoder
from .config import TabularEncoderConfig
from .staged import StagedEncoder


class FeatureTokenizer(nn.Module):
    """Columns -> ``B x (Kc + Kn) x D`` tokens."""

    def __init__(self, schema: TabularSchema, dim: int) -> None:
        super().__init__()
        self.schema = schema
        self.cat = nn.ModuleList(nn.Embedding(max(int(c), 1), dim) for c in schema.cat_cardinalities)
        self.num_weight = nn.Parameter(torch.randn(schema.n_num, dim) * 0.1)
        self.num_bias = nn.Parameter(torch.zeros(schema.n_num, dim))
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """Return (tokens, observed-cell mask or None)."""
        parts, masks = [], []
        if self.schema.cat_cardinalities:
            cat = inputs["cat"].long()
            parts.append(torch.stack([emb(cat[:, j]) for j, emb in enumerate(self.cat)], dim=1))
            masks.append(inputs.get("cat_mask"))
        if self.schema.n_num:
            num = inputs["num"].float()
            parts.append(num.unsqueeze(-1) * self.num_weight + self.num_bias)
            masks.append(inputs.get("num_mask"))
        tokens = torch.cat(parts, dim=1)
        if all(m is None for m in masks):
            return tokens, None
        observed = torch.cat([
            (m.bool() if m is not None else torch.ones(p.shape[:2], dtype=torch.bool, device=p.device))
            for m, p in zip(masks, parts, strict=True)], dim=1)
        tokens = torch.where(observed.unsqueeze(-1), tokens, self.mask_token.to(tokens.dtype))
        return tokens, observed


@register_encoder("ft_transformer")
class TabularEncoder(StagedEncoder):
    """FT-Transformer-style table encoder with tokens and a pooled [CLS] output.

    Stem: the column tokenizer and the [CLS] token; stages: the transformer layers; finish: the
    final LayerNorm.
    """

    Config = TabularEncoderConfig
    stem_names = ("tokenizer", "cls")

    def __init__(self, cfg: TabularEncoderConfig, schema: TabularSchema, dim: int) -> None:
        super().__init__()
        self.tokenizer = FeatureTokenizer(schema, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        layer = nn.TransformerEncoderLayer(dim, cfg.heads, int(dim * cfg.ffn_mult), cfg.dropout,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dim = dim
        self.stage_names = tuple(f"layers.layers.{i}" for i in range(cfg.depth))

    def stem(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """(``B x (1 + L) x D`` [CLS] + column tokens, key-padding mask of unobserved cells or None)."""
        tokens, observed = self.tokenizer(inputs)
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        pad = None
        if observed is not None:
            pad = ~torch.cat([torch.ones_like(observed[:, :1]), observed], dim=1)
        return x, pad

    def stage(self, i: int, state: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None]:
        """Transformer layer ``i`` with the padding mask."""
        x, pad = state
        return self.layers.layers[i](x, src_key_padding_mask=pad), pad

    def finish(self, state: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor]:
        """Final norm; returns (column tokens ``B x L x D``, [CLS] ``B x D``)."""
        x = self.norm(state[0])
        return x[:, 1:], x[:, 0]

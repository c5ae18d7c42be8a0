"""ShaSpec (Wang et al., CVPR 2023): shared + specific feature modelling for missing modalities.

A shared encoder is applied to every modality (features ``r_m``), a specific encoder per modality
(``s_m``); the fused feature is the residual ``f_m = r_m + proj([r_m; s_m])`` (one ``proj`` for all
modalities); an absent modality's fused feature is replaced by the shared feature of an available one;
the classifier reads ``[f_image; f_tabular]``. Objective ``L = L_task + alpha L_dao + beta L_dco``:
distribution alignment (DAO) between the shared features and domain (modality) classification (DCO)
of the specific features.

Adapted to image + tabular (docs/methods.md#shaspec-port): a literally shared encoder cannot take raw pixels and
table rows, so each modality first goes through a *stem* (the dataset card's encoder for that modality,
giving tokens of the common width ``hidden``) and the shared encoder is a transformer trunk over those
tokens whose weights are shared by both modalities. The specific encoder of a modality is a stem of its
own plus a trunk of the same architecture with its own weights (the official code also runs separate
shared and specific backbones); ``share_stem=True`` lets both paths reuse one stem (half the encoder cost).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import MODALITIES, Batch, Output
from ..encoders.build import build_encoder
from ..errors import ConfigError
from ..losses import masked_mean, task_loss
from ..registry import register_method
from .base import BuildContext, Method
from .params import ShaSpecConfig


def dao_loss(r_a: Tensor, r_b: Tensor, kind: str, rows: Tensor | None) -> Tensor:
    """Distribution alignment: per row ``mean_k |r_a - r_b|`` (``l1``) or ``mean_k (r_a - r_b)^2``
    (``mse``), averaged over ``rows`` (all rows if ``None``; 0 if none)."""
    diff = r_a - r_b
    per_row = diff.abs().mean(dim=-1) if kind == "l1" else diff.pow(2).mean(dim=-1)
    return masked_mean(per_row, rows)


def dco_loss(domain_logits: Tensor, entries: Tensor | None) -> Tensor:
    """Domain classification: CE of ``domain_logits`` (``B x M x M``, row ``j`` = the classifier on
    modality ``j``'s specific feature) against the label ``j``, averaged over the covered
    (row, modality) ``entries`` (``B x M`` bool; all if ``None``)."""
    b, m, _ = domain_logits.shape
    labels = torch.arange(m, device=domain_logits.device).expand(b, m)
    ce = F.cross_entropy(domain_logits.reshape(b * m, m), labels.reshape(-1), reduction="none").view(b, m)
    return masked_mean(ce, entries)


def substitute_missing(fused: Tensor, shared: Tensor, present: Tensor) -> Tensor:
    """Missing-modality substitution: ``f_m`` where ``m`` is present, else the shared feature of the
    first present modality (for two modalities: the other one); zeros if none is present.

    ``fused`` and ``shared`` are ``B x M x D``, ``present`` ``B x M`` bool.
    """
    present = present.to(torch.bool)
    first = present.to(torch.int64).argmax(dim=1)  # index of the first present modality
    fill = shared[torch.arange(shared.shape[0], device=shared.device), first]  # B x D
    fill = torch.where(present.any(dim=1, keepdim=True), fill, torch.zeros_like(fill))
    return torch.where(present.unsqueeze(-1), fused, fill.unsqueeze(1).expand_as(fused))


class Trunk(nn.Module):
    """Pre-norm transformer layers over ``B x L x D`` tokens, then LayerNorm and mean over tokens."""

    def __init__(self, dim: int, depth: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"shaspec: trunk_heads={heads} must divide hidden={dim}")
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """Pooled ``B x D`` feature."""
        return self.norm(self.layers(tokens)).mean(dim=1)


@register_method("shaspec")
class ShaSpec(Method):
    """ShaSpec on image + tabular (see the module docstring for the stem + shared-trunk adaptation).

    Loss terms: ``task`` (classifier on the fused features), ``dao`` (``alpha`` x alignment of
    ``r_image`` and ``r_tabular``), ``dco`` (``beta`` x modality classification of ``s_m``).

    Deviations from the official code (see also ``methods/shaspec.yaml``): DAO and DCO cover only
    rows where the modalities they involve are present (``aux_on_absent=True`` restores the official
    behaviour of computing them on zero-filled inputs too); features are pooled vectors (the official
    segmentation code aligns feature maps); the residual is added to the shared feature as in the
    official code (the third-party classification port adds it to the specific one).

    ``Output.embeddings[m]`` is the fused feature ``f_m = r_m + proj([r_m; s_m])`` (width ``hidden``),
    zero where ``m`` is absent (the substitution only feeds the classifier).
    """

    Config = ShaSpecConfig
    cite = ("Wang et al., Multi-modal Learning with Missing Modality via Shared-Specific Feature "
            "Modelling, CVPR 2023")

    def __init__(self, ctx: BuildContext, cfg: ShaSpecConfig) -> None:
        super().__init__(ctx, cfg)
        d, n_mod = ctx.hidden, len(MODALITIES)
        self.stems = nn.ModuleDict({m: build_encoder(m, ctx.info, ctx.encoders, d) for m in MODALITIES})
        self.specific_stems = None if cfg.share_stem else nn.ModuleDict(
            {m: build_encoder(m, ctx.info, ctx.encoders, d) for m in MODALITIES})
        self.shared_trunk = Trunk(d, cfg.trunk_depth, cfg.trunk_heads, cfg.dropout)
        self.specific_trunks = nn.ModuleDict({m: Trunk(d, cfg.trunk_depth, cfg.trunk_heads, cfg.dropout)
                                              for m in MODALITIES})
        self.proj = nn.Linear(2 * d, d)  # residual fusion, one layer for every modality
        self.domain_classifier = nn.Linear(d, n_mod)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(n_mod * d, ctx.info.num_classes)

    def forward(self, batch: Batch) -> Output:
        """Shared/specific features, residual fusion, substitution of absent modalities, classifier."""
        present = batch.present.to(torch.bool)
        shared, specific = [], []
        for m in MODALITIES:
            tokens, _ = self.stems[m](batch.inputs[m])
            shared.append(self.shared_trunk(tokens))
            if self.specific_stems is not None:
                tokens, _ = self.specific_stems[m](batch.inputs[m])
            specific.append(self.specific_trunks[m](tokens))
        r_raw, s_raw = torch.stack(shared, dim=1), torch.stack(specific, dim=1)  # B x M x D
        keep = present.unsqueeze(-1)
        r = torch.where(keep, r_raw, torch.zeros_like(r_raw))
        s = torch.where(keep, s_raw, torch.zeros_like(s_raw))
        fused = r + self.proj(torch.cat([r, s], dim=-1))
        fused = torch.where(keep, fused, torch.zeros_like(fused))
        features = substitute_missing(fused, r, present)
        logits = self.classifier(self.dropout(features.flatten(1)))
        emb = {m: fused[:, j] for j, m in enumerate(MODALITIES)}
        aux = {"shared": r, "specific": s}
        if self.cfg.aux_on_absent:  # official code: auxiliaries on zero-filled inputs too (loss only)
            aux["shared_raw"], aux["specific_raw"] = r_raw, s_raw
            aux["domain_logits"] = self.domain_classifier(s_raw)
        else:
            aux["domain_logits"] = self.domain_classifier(s)
        return Output(logits=logits, embeddings=emb, aux=aux)

    def probe_features(self, out: Output) -> dict[str, Tensor]:
        """The shared and specific features of each modality."""
        return {f"{m}.{branch}": out.aux[branch][:, j] for j, m in enumerate(MODALITIES)
                for branch in ("shared", "specific")}

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        """``task`` + ``alpha`` DAO + ``beta`` DCO, masked by presence unless ``aux_on_absent``."""
        cfg = self.cfg
        present = batch.present.to(torch.bool)
        anyp = present.any(dim=1)
        if cfg.aux_on_absent:
            r = out.aux["shared_raw"]
            dao = dao_loss(r[:, 0], r[:, 1], cfg.dao, None)
            dco = dco_loss(out.aux["domain_logits"], None)
        else:
            r = out.aux["shared"]
            dao = dao_loss(r[:, 0], r[:, 1], cfg.dao, present.all(dim=1))
            dco = dco_loss(out.aux["domain_logits"], present)
        return {"task": task_loss(out.logits, batch.y, self.task, anyp),
                "dao": cfg.alpha * dao, "dco": cfg.beta * dco}

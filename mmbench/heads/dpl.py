"""The ``dpl`` head: missing-case-aware decoupled prototypes (Lu et al., DPL, arXiv 2505.08283).

Per class k and missing case, a prototype decomposed into one component per *present* modality
(Eq. 1-3; the components of absent modalities are fixed at 0 as in Eq. 6-7, so 4 are learned:
image and tabular for complete rows, image for image-only rows, tabular for tabular-only rows).
Logits are cosines (Eq. 5-7): the mean of the two modality cosines for complete rows, the present
modality's cosine otherwise. Training uses a missing-case ArcFace (Eq. 8-11, its own (s, m) per
case) plus a supervised contrastive loss over the prototype components (Eq. 12), total Eq. 13.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import IMAGE, TABULAR, Batch, Output
from ..errors import ConfigError
from ..losses import compute_dtype, masked_mean
from ..models.base import BuildContext
from ..registry import register_head
from .base import Head
from .params import DPLConfig

#: missing cases, in the order of the case index (-1 = no modality present)
CASES: tuple[str, ...] = ("complete", "image_only", "tabular_only")
COMPLETE, IMAGE_ONLY, TABULAR_ONLY = 0, 1, 2
_EPS = 1e-7


def case_index(present: Tensor) -> Tensor:
    """Missing case of each row: 0 complete, 1 image-only, 2 tabular-only, -1 nothing present."""
    img, tab = present[:, IMAGE], present[:, TABULAR]
    case = torch.full(img.shape, -1, dtype=torch.long, device=present.device)
    case = torch.where(img & tab, COMPLETE, case)
    case = torch.where(img & ~tab, IMAGE_ONLY, case)
    return torch.where(~img & tab, TABULAR_ONLY, case)


def arcface_logits(cos: Tensor, target: Tensor, s: Tensor, m: Tensor) -> Tensor:
    """Scaled ArcFace logits (Eq. 8, 11): ``s * cos(theta + m)`` on target entries, ``s * cos`` elsewhere.

    ``cos`` is ``B x K``; ``target`` a ``B x K`` bool (one-hot, or multi-hot for multi-label);
    ``s``/``m`` per row (``B x 1``). Non-easy margin of the official code (after Deng et al.): where
    ``theta + m`` would pass pi (``cos <= cos(pi - m)``) the target logit is ``cos - m sin(m)``,
    keeping it monotone. ``sin(theta)`` uses ``1 - cos^2`` clamped away from 0, so ``|cos| -> 1``
    gives a finite value and a finite gradient (no NaN).
    """
    dtype = compute_dtype(cos)
    cos = cos.to(dtype).clamp(-1.0, 1.0)
    s, m = s.to(dtype), m.to(dtype)
    sin = torch.sqrt((1.0 - cos * cos).clamp_min(_EPS))
    phi = cos * torch.cos(m) - sin * torch.sin(m)
    phi = torch.where(cos > torch.cos(math.pi - m), phi, cos - m * torch.sin(m))
    return s * torch.where(target, phi, cos)


def supcon(views: Tensor, temperature: float, base_temperature: float = 1.0,
           reduction: str = "mean", active: Tensor | None = None) -> Tensor:
    """Supervised contrastive loss over prototype views (Eq. 12; Khosla et al. 2020, ``L_out``).

    ``views`` is ``K x V x D`` (class x view), L2-normalised; ``active`` (``V`` bool) keeps a subset
    of the views (the others take no part at all). Every active view is an anchor; its positives are
    the other active views of its class, its denominator every other active view. ``mean``: per-anchor
    mean over positives, mean over anchors, times ``temperature / base_temperature`` (official code);
    ``sum``: the double sum of Eq. 12. Anchors without a positive contribute 0.
    """
    K, V, D = views.shape
    feats = views.to(compute_dtype(views)).transpose(0, 1).reshape(V * K, D)  # view-major, as torch.cat(unbind(.., 1))
    labels = torch.arange(K, device=views.device).repeat(V)
    on = torch.ones(V, dtype=torch.bool, device=views.device) if active is None else active.to(torch.bool)
    on = on.repeat_interleave(K)
    sim = feats @ feats.T / temperature
    sim = sim - sim.max(dim=1, keepdim=True).values.detach()  # stability; the loss is shift-invariant
    contrast = ~torch.eye(V * K, dtype=torch.bool, device=views.device) & on[:, None] & on[None, :]
    positive = (labels[:, None] == labels[None, :]) & contrast
    # finite fill (not -inf): an anchor with no contrast then has a finite, unused log-denominator
    log_den = torch.logsumexp(sim.masked_fill(~contrast, -1e4), dim=1, keepdim=True)
    log_prob = torch.where(positive, sim - log_den, torch.zeros_like(sim))
    pos_sum = log_prob.sum(dim=1)
    if reduction == "sum":
        return -pos_sum.sum()
    per_anchor = pos_sum / positive.sum(dim=1).clamp_min(1)
    return -(temperature / base_temperature) * masked_mean(per_anchor, on)


@register_head("dpl")
class DPLHead(Head):
    """Decoupled prototype head (DPL Eq. 1-13) on the method's pooled per-modality embeddings.

    Deviations (also in ``methods/late_fusion+dpl.yaml`` notes):
      * SupCon views are the prototype components of the missing cases seen in training so far (the
        official code picks them per dataset scenario: 4 for ``both``, 3 for one-modality-missing,
        docs/methods.md#dpl-losses); both agree once every case of the scenario has occurred.
      * ``supcon_reduction: mean`` (default) follows the official SupCon normalisation that lambda = 0.9
        was tuned with; Eq. 12 as printed is an unnormalised sum (``sum``).
      * The decomposed SupCon compares image and tabular components, so it needs equal embedding
        widths; the head refuses (``ConfigError``) otherwise.
      * Absent modalities are zero embeddings (as in the paper, Sec. 3.1), not the official code's
        all-ones image; rows with no modality get zero logits and no loss.
    """

    Config = DPLConfig
    cite = ("Lu et al., Decoupled Multimodal Prototypes for Visual Recognition with Missing Modalities, "
            "arXiv 2505.08283")

    def __init__(self, ctx: BuildContext, embed_dims: dict[str, int], cfg: DPLConfig) -> None:
        super().__init__(ctx, embed_dims, cfg)
        missing = [m for m in ("image", "tabular") if not embed_dims.get(m)]
        if missing:
            raise ConfigError(
                f"head 'dpl' needs a pooled embedding per modality (image and tabular) to build its "
                f"decoupled prototypes; the method exposes none for {missing} "
                f"(embed_dims={dict(embed_dims)}); use head: linear or native")
        d_img, d_tab = int(embed_dims["image"]), int(embed_dims["tabular"])
        if cfg.decomposed and cfg.supcon_weight > 0 and d_img != d_tab:
            raise ConfigError(
                f"head 'dpl': the prototype SupCon (Eq. 12) compares image and tabular prototype "
                f"components, which needs equal embedding widths, got image={d_img}, tabular={d_tab}; "
                "set head_params.supcon_weight: 0 or head_params.decomposed: false")
        K = ctx.info.num_classes
        self.num_classes = K
        self.dims = (d_img, d_tab)
        if cfg.decomposed:
            shapes = {"complete_image": d_img, "complete_tabular": d_tab,
                      "image_only_image": d_img, "tabular_only_tabular": d_tab}
        else:
            shapes = {"complete": d_img + d_tab, "image_only": d_img, "tabular_only": d_tab}
        self.prototypes = nn.ParameterDict()
        for name, dim in shapes.items():
            w = torch.empty(K, dim)
            nn.init.xavier_normal_(w)  # as the official code (on its D x K layout; same std)
            self.prototypes[name] = nn.Parameter(w)
        self.register_buffer("s", torch.tensor([cfg.s_complete, cfg.s_image_only, cfg.s_tabular_only]),
                             persistent=False)
        self.register_buffer("m", torch.tensor([cfg.m_complete, cfg.m_image_only, cfg.m_tabular_only]),
                             persistent=False)
        # cases seen in training batches (selects the SupCon views); not part of checkpoints
        self.register_buffer("cases_seen", torch.zeros(3, dtype=torch.bool), persistent=False)

    # ----------------------------------------------------------------------------- logits
    def _unit(self, name: str) -> Tensor:
        return F.normalize(self.prototypes[name], dim=1)

    def cosine_logits(self, emb: dict[str, Tensor], present: Tensor) -> Tensor:
        """``B x K`` cosine logits (Eq. 5-7); absent embeddings are masked first, never read."""
        h_img, h_tab = (torch.where(present[:, j : j + 1], emb[m], torch.zeros_like(emb[m]))
                        for j, m in ((IMAGE, "image"), (TABULAR, "tabular")))
        case = case_index(present)[:, None]
        if self.cfg.decomposed:
            u_img, u_tab = F.normalize(h_img, dim=1), F.normalize(h_tab, dim=1)
            complete = 0.5 * (u_img @ self._unit("complete_image").T
                              + u_tab @ self._unit("complete_tabular").T)
            img_only = u_img @ self._unit("image_only_image").T
            tab_only = u_tab @ self._unit("tabular_only_tabular").T
        else:  # Table 3 "un-decomp.": cosine of the concatenation (the absent half is 0)
            u = F.normalize(torch.cat([h_img, h_tab], dim=1), dim=1)
            d_img = self.dims[0]
            complete = u @ self._unit("complete").T
            img_only = u[:, :d_img] @ self._unit("image_only").T
            tab_only = u[:, d_img:] @ self._unit("tabular_only").T
        z = torch.where(case == COMPLETE, complete, torch.zeros_like(complete))
        z = torch.where(case == IMAGE_ONLY, img_only, z)
        return torch.where(case == TABULAR_ONLY, tab_only, z)

    def forward(self, out: Output, batch: Batch) -> Tensor:
        """Evaluation logits: the unscaled, margin-free cosines (Eq. 5-7)."""
        return self.cosine_logits(out.embeddings, batch.present)

    # ----------------------------------------------------------------------------- losses
    def per_sample_task_loss(self, batch: Batch, out: Output) -> Tensor:
        """Missing-case ArcFace per row (Eq. 8-11 before the batch mean); 0 for rows with no modality."""
        case = case_index(batch.present)
        idx = case.clamp_min(0)
        s, m = self.s[idx][:, None], self.m[idx][:, None]
        cos = out.logits
        if self.task == "multilabel":
            logits = arcface_logits(cos, batch.y > 0.5, s, m)
            bce = F.binary_cross_entropy_with_logits(logits, batch.y.to(logits.dtype), reduction="none")
            per = bce.sum(dim=1) if self.cfg.multilabel_reduction == "sum" else bce.mean(dim=1)
        else:
            y = batch.y.long()
            target = F.one_hot(y, self.num_classes).bool()
            per = F.cross_entropy(arcface_logits(cos, target, s, m), y, reduction="none")
        return torch.where(case >= 0, per, torch.zeros_like(per))

    def prototype_views(self) -> tuple[Tensor, Tensor]:
        """All unit prototype components as ``K x V x D`` views, and the missing case of each view.

        Decomposed: (image, complete), (image, image-only), (tabular, complete), (tabular,
        tabular-only), the official order. Un-decomposed: one whole prototype per case, the absent
        modality's half fixed at 0.
        """
        if self.cfg.decomposed:
            names = ("complete_image", "image_only_image", "complete_tabular", "tabular_only_tabular")
            view_case = [COMPLETE, IMAGE_ONLY, COMPLETE, TABULAR_ONLY]
            views = torch.stack([self._unit(n) for n in names], dim=1)
        else:
            d_img, d_tab = self.dims
            img, tab = self._unit("image_only"), self._unit("tabular_only")
            views = torch.stack([self._unit("complete"),
                                 torch.cat([img, img.new_zeros(img.shape[0], d_tab)], dim=1),
                                 torch.cat([tab.new_zeros(tab.shape[0], d_img), tab], dim=1)], dim=1)
            view_case = [COMPLETE, IMAGE_ONLY, TABULAR_ONLY]
        return views, torch.tensor(view_case, device=views.device)

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        """``arcface`` (Eq. 8-11, mean over rows) and ``supcon`` (lambda x Eq. 12): Eq. 13."""
        case = case_index(batch.present)
        terms = {"arcface": masked_mean(self.per_sample_task_loss(batch, out), case >= 0)}
        if self.cfg.supcon_weight > 0:
            in_batch = torch.stack([(case == c).any() for c in range(len(CASES))])
            if self.training:
                self.cases_seen |= in_batch
            views, view_case = self.prototype_views()
            active = (self.cases_seen | in_batch)[view_case]
            terms["supcon"] = self.cfg.supcon_weight * supcon(
                views, self.cfg.temperature, self.cfg.base_temperature, self.cfg.supcon_reduction, active)
        return terms

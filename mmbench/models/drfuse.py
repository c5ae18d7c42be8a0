"""DrFuse (Yao et al., AAAI 2024): disentangled shared/distinct features, logit pooling of the shared
features, disease-(class-)wise attention fusion and an attention ranking loss.

Adapted to image + tabular (docs/methods.md#drfuse-port): the EHR branch becomes the tabular encoder and the CXR
branch the image encoder; the original assumes the EHR is always present, here both modalities may be
absent, so every mask is symmetric:

* logit pooling runs over the *present* shared features (a single present one passes through);
* the attention query averages the available tokens only and an absent distinct token gets score -inf
  (paper Eq. 7 and its masking note); the pooled shared token is always available;
* the per-branch heads, ``|cos|`` terms and JSD are masked to the rows where their modality (or, for
  JSD, both) is present; rows with no modality are skipped by every term.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import IMAGE, TABULAR, Batch, Output
from ..encoders.build import build_shared_specific
from ..losses import masked_mean, task_loss, task_loss_per_sample
from ..registry import register_method
from .base import BuildContext, Method
from .params import DrFuseConfig

#: Order of the three attention tokens: image-distinct, pooled shared, tabular-distinct (the official
#: order is EHR-distinct, shared, CXR-distinct; the attention is permutation-equivariant).
TOKENS: tuple[str, ...] = ("image", "shared", "tabular")
#: Ranking pairs (A, B) of the attention ranking loss, the official (cxr, ehr), (shared, ehr),
#: (shared, cxr) with CXR -> image and EHR -> tabular.
RANK_PAIRS: tuple[tuple[str, str], ...] = (("image", "tabular"), ("shared", "tabular"), ("shared", "image"))


def logit_pool(logits: Tensor, present: Tensor) -> Tensor:
    """Logit pooling: ``h`` with ``sigmoid(h) = mean_{m present} sigmoid(a_m)``, elementwise.

    ``logits`` is ``B x M x D`` (the projected shared features ``a_m = g(h_sh_m)``), ``present``
    ``B x M``. For two present features this is the paper's
    ``log(2e^{a+b} + e^a + e^b) - log(2 + e^a + e^b)``, computed stably as
    ``logsumexp_m log sigmoid(a_m) - logsumexp_m log sigmoid(-a_m)``; a single present feature passes
    through unchanged and a row without any gives zeros.
    """
    present = present.to(torch.bool)
    neg_inf = torch.finfo(logits.dtype).min
    keep = present.unsqueeze(-1)
    pos = torch.where(keep, F.logsigmoid(logits), neg_inf)
    neg = torch.where(keep, F.logsigmoid(-logits), neg_inf)
    pooled = torch.logsumexp(pos, dim=1) - torch.logsumexp(neg, dim=1)
    count = present.sum(dim=1)
    single = (present.to(logits.dtype).unsqueeze(-1) * logits).sum(dim=1)  # exact pass-through
    pooled = torch.where((count == 1).unsqueeze(-1), single, pooled)
    return torch.where((count == 0).unsqueeze(-1), torch.zeros_like(pooled), pooled)


def sigmoid_jsd(a: Tensor, b: Tensor) -> Tensor:
    """Per-row JSD of the sigmoid-induced vectors ``P = sigmoid(a)``, ``Q = sigmoid(b)`` (``B x D`` -> ``B``).

    ``sum_k 1/2 [P_k log(P_k/M_k) + Q_k log(Q_k/M_k)]`` with ``M = (P+Q)/2``, as the official code
    (per-dimension terms without the Bernoulli complements), computed in log space.
    """
    log_p, log_q = F.logsigmoid(a), F.logsigmoid(b)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    terms = 0.5 * (log_p.exp() * (log_p - log_m) + log_q.exp() * (log_q - log_m))
    return terms.sum(dim=-1)


def abs_cosine(x: Tensor, y: Tensor) -> Tensor:
    """``|cos(x, y)|`` per row (the disentanglement term between shared and distinct features)."""
    return F.cosine_similarity(x, y, dim=-1, eps=1e-8).abs()


def attention_rank_loss(attn: Tensor, branch_loss: Tensor, rows: Tensor) -> Tensor:
    """Attention ranking loss over the :data:`RANK_PAIRS` (mean of the three pair terms).

    ``attn`` is ``B x C x 3`` (softmax weights over :data:`TOKENS` per class), ``branch_loss`` the
    detached per-class loss of each token's branch, ``B x C x 3``, and ``rows`` a ``B`` bool mask. For a
    pair (A, B) the target is ``t = +1`` if branch A's loss is smaller, else ``-1``, and the term is the
    margin-0 ranking loss ``max(0, -t (alpha_A - alpha_B))``; as in the official code its sum over
    covered (row, class) entries is divided by the number of strictly positive entries (0 if none).
    """
    idx = {name: j for j, name in enumerate(TOKENS)}
    w = rows.to(attn.dtype).unsqueeze(-1)
    terms = []
    for a, b in RANK_PAIRS:
        ia, ib = idx[a], idx[b]
        target = 2.0 * (branch_loss[..., ia] < branch_loss[..., ib]).to(attn.dtype) - 1.0
        hinge = torch.clamp(-target * (attn[..., ia] - attn[..., ib]), min=0.0) * w
        terms.append(hinge.sum() / (hinge > 0).sum().clamp_min(1).to(attn.dtype))
    return torch.stack(terms).mean()


def per_class_branch_loss(logits: Tensor, y: Tensor, task: str, target: str) -> Tensor:
    """Detached ``B x C`` loss of one branch, used only to decide the ranking targets.

    Multi-label: per-label BCE (paper). Multi-class/binary: ``"ovr"`` per-class BCE of the softmax
    probability against the one-hot label; ``"ce"`` the per-sample CE repeated over classes.
    """
    logits = logits.detach()
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
    if target == "ce":
        return task_loss_per_sample(logits, y, task).unsqueeze(1).expand_as(logits)
    log_p = torch.log_softmax(logits, dim=-1)
    # log(1 - p) = log(1 - exp(log_p)), stable on both sides of -log 2
    log_1mp = torch.where(log_p > -math.log(2.0), torch.log(-torch.expm1(log_p)),
                          torch.log1p(-torch.exp(log_p)))
    onehot = F.one_hot(y.long(), logits.shape[-1]).to(logits.dtype)
    return -(onehot * log_p + (1.0 - onehot) * log_1mp)


class SharedProjector(nn.Module):
    """``g``: the MLP d -> 2d -> d -> d (ReLU) applied to every shared feature before any use."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim), nn.ReLU(),
                                 nn.Linear(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        """Project a shared feature."""
        return self.net(x)


class ClassWiseAttention(nn.Module):
    """Disease-(class-)wise attention over the tokens (paper Eq. 7).

    One ``Linear(d, (2 + C) d)`` gives a query, a value and C keys per token; the query is averaged over
    the available tokens, ``s_{c,j} = q . k_{c,j} / sqrt(d)`` with -inf for unavailable tokens, softmax
    over tokens per class, ``z_c = sum_j alpha_{c,j} v_j`` and the logit ``w_c . z_c + b_c``.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        self.proj = nn.Linear(dim, (2 + num_classes) * dim)
        self.out = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor, available: Tensor) -> tuple[Tensor, Tensor]:
        """``tokens`` B x T x d, ``available`` B x T bool -> (logits B x C, alpha B x C x T)."""
        b, t, d = tokens.shape
        qkv = self.proj(tokens).view(b, t, 2 + self.num_classes, d)
        q, v, k = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2:]
        w = available.to(tokens.dtype)
        q_mean = (q * w.unsqueeze(-1)).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1.0)
        scores = torch.einsum("bd,btcd->bct", q_mean, k) / math.sqrt(d)
        scores = scores.masked_fill(~available.unsqueeze(1), float("-inf"))
        alpha = torch.softmax(scores, dim=-1)
        z = torch.einsum("bct,btd->bcd", alpha, v)
        logits = (z * self.out.weight.unsqueeze(0)).sum(dim=-1) + self.out.bias  # diagonal readout
        return logits, alpha


@register_method("drfuse")
class DrFuse(Method):
    """DrFuse on image + tabular with symmetric missingness.

    Per modality a shared and a distinct encoder (identical architecture, lower layers shared by
    parameters, ``build_shared_specific``). The shared projector ``g`` maps both shared features;
    logit pooling fuses the present ones; the class-wise attention fuses [image-distinct, pooled
    shared, tabular-distinct]. Loss terms (each weighted): ``task`` (attention logits), ``pred_shared``,
    ``pred_image``, ``pred_tabular`` (branch heads), ``jsd``, ``cos_image``, ``cos_tabular``, ``rank``.

    Deviations from the paper / official code (see also ``methods/drfuse.yaml``):

    * multi-class tasks use softmax CE for every prediction loss (the paper's BCE is kept for
      multi-label); ranking targets come from ``rank_target``;
    * JSD is masked to complete rows (the official code sums its numerator over all rows, including
      zero images; ``jsd_rows="all"``). A batch without a complete row: the official code divides
      that numerator by ``max(1e-6, #paired)``, i.e. multiplies it by 10^6; ``jsd_rows="all"`` clamps
      the count at 1 instead (the numerator itself), and ``"complete"`` gives 0;
    * the image branches pool globally (the official CXR branch does not pool: docs/methods.md#drfuse-official-code);
    * the ranking loss covers complete rows only, as the official code (``pairs`` mask).

    ``Output.embeddings[m]`` is ``h_ds_m + g(h_sh_m)`` (distinct plus projected shared feature of that
    modality, width ``hidden``), zero where ``m`` is absent.
    """

    Config = DrFuseConfig
    #: the class-wise attention weights (B x C x 3) are written to the test predictions file
    save_aux: tuple[str, ...] = ("attention",)
    cite = ("Yao et al., DrFuse: Learning Disentangled Representation for Clinical Multi-Modal Fusion "
            "with Missing Modality and Modal Inconsistency, AAAI 2024")

    def __init__(self, ctx: BuildContext, cfg: DrFuseConfig) -> None:
        super().__init__(ctx, cfg)
        d, c = ctx.hidden, ctx.info.num_classes
        self.encoders = nn.ModuleDict({m: build_shared_specific(m, ctx.info, ctx.encoders, d,
                                                             cfg.separate_stages)
                                       for m in ("image", "tabular")})
        self.shared_proj = SharedProjector(d)
        self.heads = nn.ModuleDict({"image": nn.Linear(d, c), "tabular": nn.Linear(d, c),
                                    "shared": nn.Linear(d, c)})
        self.attention = ClassWiseAttention(d, c)

    def forward(self, batch: Batch) -> Output:
        """Encode, pool the shared features, attend over the tokens (absent ones masked)."""
        present = batch.present.to(torch.bool)
        cols = {"image": IMAGE, "tabular": TABULAR}
        shared, distinct, raw = {}, {}, {}
        for m, j in cols.items():
            (_, h_sh), (_, h_ds) = self.encoders[m](batch.inputs[m])
            keep = present[:, j : j + 1]
            raw[m] = self.shared_proj(h_sh)
            shared[m] = torch.where(keep, raw[m], torch.zeros_like(raw[m]))
            distinct[m] = torch.where(keep, h_ds, torch.zeros_like(h_ds))
        a = torch.stack([shared["image"], shared["tabular"]], dim=1)
        pooled = logit_pool(a, present[:, [IMAGE, TABULAR]])
        tokens = torch.stack([distinct["image"], pooled, distinct["tabular"]], dim=1)
        available = torch.stack([present[:, IMAGE], torch.ones_like(present[:, IMAGE]),
                                 present[:, TABULAR]], dim=1)
        logits, alpha = self.attention(tokens, available)
        emb = {m: distinct[m] + shared[m] for m in cols}  # both zero where m is absent
        aux = {
            "logits_image": self.heads["image"](distinct["image"]),
            "logits_tabular": self.heads["tabular"](distinct["tabular"]),
            "logits_shared": self.heads["shared"](pooled),
            "shared_image": shared["image"], "shared_tabular": shared["tabular"],
            "distinct_image": distinct["image"], "distinct_tabular": distinct["tabular"],
            "attention": alpha,
        }
        if self.cfg.jsd_rows == "all":  # official-code JSD: unmasked shared features (loss use only)
            aux["shared_image_raw"], aux["shared_tabular_raw"] = raw["image"], raw["tabular"]
        return Output(logits=logits, embeddings=emb, aux=aux)

    def probe_features(self, out: Output) -> dict[str, Tensor]:
        """The shared and distinct (specific) features of each modality."""
        return {f"{m}.{branch}": out.aux[f"{key}_{m}"] for m in ("image", "tabular")
                for branch, key in (("shared", "shared"), ("specific", "distinct"))}

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        """Weighted terms: prediction (final + 3 branch heads), JSD, two ``|cos|`` and ranking."""
        cfg, aux, task = self.cfg, out.aux, self.task
        present = batch.present.to(torch.bool)
        img, tab = present[:, IMAGE], present[:, TABULAR]
        anyp, both = img | tab, img & tab
        terms = {
            "task": task_loss(out.logits, batch.y, task, anyp),
            "pred_shared": cfg.lambda_pred_shared * task_loss(aux["logits_shared"], batch.y, task, anyp),
            "pred_image": cfg.lambda_pred_image * task_loss(aux["logits_image"], batch.y, task, img),
            "pred_tabular": cfg.lambda_pred_tabular * task_loss(aux["logits_tabular"], batch.y, task, tab),
        }
        if cfg.jsd_rows == "all":
            jsd_rows = sigmoid_jsd(aux["shared_image_raw"], aux["shared_tabular_raw"]) * anyp
            jsd = jsd_rows.sum() / both.sum().clamp_min(1)
        else:
            jsd = masked_mean(sigmoid_jsd(aux["shared_image"], aux["shared_tabular"]), both)
        terms["jsd"] = cfg.lambda_jsd * jsd
        terms["cos_image"] = cfg.lambda_cos_image * masked_mean(
            abs_cosine(aux["shared_image"], aux["distinct_image"]), img)
        terms["cos_tabular"] = cfg.lambda_cos_tabular * masked_mean(
            abs_cosine(aux["shared_tabular"], aux["distinct_tabular"]), tab)
        branch = torch.stack([per_class_branch_loss(aux[f"logits_{t}"], batch.y, task, cfg.rank_target)
                              for t in TOKENS], dim=-1)
        terms["rank"] = cfg.lambda_rank * attention_rank_loss(aux["attention"], branch, both)
        return terms

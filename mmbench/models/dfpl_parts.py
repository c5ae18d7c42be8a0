"""Building blocks of DFPL (Zhou et al., arXiv 2606.05455): the equations of Sections III-B to III-D.

Every function works on a batch and returns *per-sample* values (``B``), so the method can mask the
rows where a modality is absent with :func:`mmbench.losses.masked_mean` (Eq. 13: "the losses
associated with the missing modality are omitted"). Every function is finite on zero inputs, so a
masked row never turns a loss (or its gradient) into NaN.
"""

from __future__ import annotations

import math

import ot
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .params import SCALE_ROWS as _SCALE_ROWS

_EPS = 1e-8

#: Row order of the multi-scale matrix H (Eq. 10).
H_ROWS: tuple[str, ...] = ("t_spec_img", "p_spec_img", "t_shared_fused", "p_shared_fused",
                           "t_spec_tab", "p_spec_tab")
#: Rows of H per scale (Table V: CMA global / prototype / multi-scale).
SCALE_ROWS = _SCALE_ROWS


# ----------------------------------------------------------------------------- similarities


def safe_norm(x: Tensor, dim: int = -1) -> Tensor:
    """L2 norm with a floor, so the norm and its gradient stay finite at the zero vector."""
    return x.pow(2).sum(dim).clamp_min(_EPS**2).sqrt()


def cosine(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """Cosine similarity along ``dim`` (0 where a vector is zero; finite gradient there)."""
    return (a * b).sum(dim) / (safe_norm(a, dim) * safe_norm(b, dim))


def abs_cosine(shared: Tensor, spec: Tensor) -> Tensor:
    """Eq. 1, first term: ``|t_shared . t_spec| / (||t_shared|| ||t_spec||)`` per row (``B``)."""
    return cosine(shared, spec).abs()


def jsd(a: Tensor, b: Tensor, mode: str = "softmax") -> Tensor:
    """Eq. 1, second term: Jensen-Shannon divergence (nats) between two feature vectors, per row.

    ``softmax``: the vectors are turned into distributions over the D dimensions by a softmax and
    ``JSD = KL(P||M)/2 + KL(Q||M)/2`` with ``M = (P+Q)/2`` (a proper JSD, in [0, log 2]).
    ``sigmoid``: DrFuse's code (the paper's [46]): ``P = sigmoid(a)``, ``Q = sigmoid(b)`` per dimension
    and ``sum_k [P log(P/M) + Q log(Q/M)] / 2`` without the Bernoulli complements.
    Both are computed in log space (finite for any input).
    """
    if mode == "softmax":
        log_p, log_q = F.log_softmax(a, dim=-1), F.log_softmax(b, dim=-1)
    elif mode == "sigmoid":
        log_p, log_q = F.logsigmoid(a), F.logsigmoid(b)
    else:
        raise ValueError(f"unknown JSD mode {mode!r}")
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    p, q = log_p.exp(), log_q.exp()
    return 0.5 * (p * (log_p - log_m)).sum(-1) + 0.5 * (q * (log_q - log_m)).sum(-1)


# ----------------------------------------------------------------------------- SSPM


def query_std(dim: int, mode: str) -> float:
    """Standard deviation of the initial TPE queries (the paper gives none).

    ``unit``: ``N(0, 1/D)``, so a query has norm about 1 at any D, the scale of the attention output at
    initialisation, and prototypes start input-dependent. ``normal``: ``N(0, 1)`` (``nn.Embedding``'s
    default), norm about sqrt(D): the query term of Eq. 2's residual then dominates and the prototypes
    start almost input-independent (docs/dfpl.md, "Why the literal reading collapses").
    """
    if mode == "unit":
        return 1.0 / math.sqrt(dim)
    if mode == "normal":
        return 1.0
    raise ValueError(f"unknown query_init {mode!r}")


class TokenPrototypeExtractor(nn.Module):
    """TPE, Eq. 2: K learnable queries attend (one head) over the tokens of one branch.

    ``F' = softmax(F W_q (T W_k)^T / sqrt(D)) T W_v + F``, ``P = FFN(F') + F'``. One instance per
    branch (shared/specific x image/tabular): the four groups of queries are parameter-independent.
    """

    def __init__(self, dim: int, num_prototypes: int, ffn_mult: float = 4.0, query_init: str = "unit") -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_prototypes, dim) * query_std(dim, query_init))
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        hidden = max(1, int(round(dim * ffn_mult)))
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """``B x L x D`` tokens -> ``B x K x D`` prototypes."""
        q = self.w_q(self.queries)  # K x D
        k, v = self.w_k(tokens), self.w_v(tokens)  # B x L x D
        attn = torch.softmax(torch.einsum("kd,bld->bkl", q, k) * self.scale, dim=-1)
        f1 = torch.einsum("bkl,bld->bkd", attn, v) + self.queries
        return self.ffn(f1) + f1


def diversity(prototypes: Tensor, delta: float) -> Tensor:
    """Eq. 3 for one group: ``sum_{i != j} max(0, cos(P_i, P_j) - delta) / (K (K - 1))`` per row."""
    k = prototypes.shape[1]
    if k < 2:
        return prototypes.sum((1, 2)) * 0.0
    cos = cosine(prototypes.unsqueeze(2), prototypes.unsqueeze(1))  # B x K x K
    off = ~torch.eye(k, dtype=torch.bool, device=prototypes.device)
    return (F.relu(cos - delta) * off).sum((1, 2)) / (k * (k - 1))


# ----------------------------------------------------------------------------- PFA


def squared_distances(x: Tensor, y: Tensor, normalize: bool = False) -> Tensor:
    """Eq. 4: ``C_ij = ||x_i - y_j||^2`` for ``B x K x D`` inputs -> ``B x K x K``.

    ``normalize``: of the L2-normalised prototypes instead (``2 - 2 cos``, in [0, 4]; not the paper).
    """
    if normalize:
        x, y = x / safe_norm(x).unsqueeze(-1), y / safe_norm(y).unsqueeze(-1)
    return (x.unsqueeze(2) - y.unsqueeze(1)).pow(2).sum(-1)


def relative_cost(cost: Tensor) -> Tensor:
    """Eq. 4 costs (``B x K x M``) in units of their own mean per problem: ``C / mean_ij C``.

    Scale-free: the OT value of Eq. 5 on it no longer falls when all prototypes shrink together, and
    eps is a regularisation relative to the typical distance (our reading of Eq. 5; docs/dfpl.md).
    The mean is not detached, so the gradient has no component along a uniform rescaling.
    """
    return cost / cost.mean((1, 2), keepdim=True).clamp_min(_EPS)


def sinkhorn_plan(cost: Tensor, epsilon: float, max_iter: int = 50, tol: float = 1e-4,
                  scaling: float = 0.5) -> Tensor:
    """Entropic OT plans with uniform marginals for a batch of ``B x K x M`` costs (no gradient).

    POT's batched log-domain Sinkhorn (``ot.batch.bregman_log_projection_batch``) in float64, with
    epsilon-scaling: the problem is first solved at ``eps = max(C)`` and ``eps`` is multiplied by
    ``scaling`` until it reaches ``epsilon``, each stage warm-started from the last plan (two
    Sinkhorn iterations per intermediate stage, up to ``max_iter`` at ``epsilon``, stopping when the
    row marginals are within ``tol``). With raw squared distances (hundreds) and eps = 0.1, plain
    Sinkhorn needs thousands of iterations; this reaches Eq. 5's value to ~1e-3 (relative; better
    unless prototypes are near-tied) in at most ~70 iterations.
    ``scaling=0`` runs plain Sinkhorn at ``epsilon``.
    """
    c = cost.detach().double()
    eps = max(float(c.max()), epsilon) if 0.0 < scaling < 1.0 and c.numel() else epsilon
    k = -c / eps
    while True:
        last = eps <= epsilon
        out = ot.batch.bregman_log_projection_batch(k, max_iter=max_iter if last else 2, tol=tol)
        if last:
            return out["T"].to(cost.dtype)
        nxt = max(eps * scaling, epsilon)
        # the plan is exp((f + g - C) / eps); the same potentials at the next eps warm-start it
        k, eps = out["log_T"] * (eps / nxt), nxt


def entropic_ot(cost: Tensor, epsilon: float, max_iter: int = 50, tol: float = 1e-4,
                scaling: float = 0.5) -> Tensor:
    """Eq. 5 per row: ``min_G <G, C> + eps sum_ij G_ij log G_ij`` over uniform-marginal plans (``B``).

    The plan comes from :func:`sinkhorn_plan` without tracking gradients; the value is recomputed
    from it, so its gradient w.r.t. the cost is the plan itself (the envelope theorem: exact at the
    optimum, and far cheaper than back-propagating through the Sinkhorn iterations).
    """
    plan = sinkhorn_plan(cost, epsilon, max_iter, tol, scaling)
    return (plan * cost).sum((1, 2)) + epsilon * torch.special.xlogy(plan, plan).sum((1, 2))


def class_means(features: Tensor, targets: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class means of ``features`` over the rows ``rows`` (Eq. 6: ``1/|B_c| sum_{i in B_c}``).

    ``targets`` is ``B x C`` in {0, 1} (one-hot for multi-class). Returns (``C x D`` means, ``C`` bool:
    the class has at least one row).
    """
    weights = targets.to(features.dtype) * rows.to(features.dtype).unsqueeze(1)  # B x C
    counts = weights.sum(0)
    means = weights.t() @ features / counts.clamp_min(1.0).unsqueeze(1)
    return means, counts > 0


class ClassPrototypeGate(nn.Module):
    """Eq. 6-7: ``nu_c = lambda_c nu_glo,c + (1 - lambda_c) nu_proto,c``,
    ``lambda_c = sigma(w^T [nu_glo,c; nu_proto,c])``.

    ``mode`` = ``gated`` (the paper), ``global`` (lambda = 1) or ``prototype`` (lambda = 0) for Table IV.
    One gating vector ``w`` (no bias, as Eq. 7) serves both modalities.
    """

    def __init__(self, dim: int, mode: str = "gated") -> None:
        super().__init__()
        self.mode = mode
        self.w = nn.Parameter(torch.zeros(2 * dim)) if mode == "gated" else None

    def gate(self, glo: Tensor, proto: Tensor) -> Tensor:
        """``C`` gate values lambda_c for ``C x D`` global and prototype-level class means."""
        if self.mode == "global":
            return glo.new_ones(glo.shape[0])
        if self.mode == "prototype":
            return glo.new_zeros(glo.shape[0])
        return torch.sigmoid(torch.cat([glo, proto], dim=1) @ self.w)

    def forward(self, glo: Tensor, proto: Tensor) -> Tensor:
        """Fused ``C x D`` class prototypes."""
        lam = self.gate(glo, proto).unsqueeze(1)
        return lam * glo + (1.0 - lam) * proto


def cali(p_img: Tensor, nu_img: Tensor, p_tab: Tensor, nu_tab: Tensor, classes: Tensor) -> Tensor:
    """Eq. 8 per row: ``1/|C| sum_{c in C} (cos(p_img, nu_c^img) - cos(p_tab, nu_c^tab))^2``.

    ``p_*`` are ``B x D`` aggregated shared prototypes, ``nu_*`` ``C x D`` class prototypes,
    ``classes`` the ``C`` bool set of classes present in the batch. 0 when the set is empty.
    """
    s_img = cosine(p_img.unsqueeze(1), nu_img.unsqueeze(0))  # B x C
    s_tab = cosine(p_tab.unsqueeze(1), nu_tab.unsqueeze(0))
    w = classes.to(p_img.dtype)
    return ((s_img - s_tab).pow(2) * w).sum(1) / w.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------- CMA


def fuse_shared(img: Tensor, tab: Tensor, present: Tensor) -> Tensor:
    """Eq. 9: the mean of the shared features of the present modalities (zero if none is present).

    ``present`` is ``B x 2`` bool (image, tabular). Selection by ``torch.where``, so an absent
    modality's values never reach the result, not even multiplied by zero.
    """
    m_img, m_tab = present[:, 0:1], present[:, 1:2]
    one = torch.where(m_img, img, torch.where(m_tab, tab, torch.zeros_like(img)))
    return torch.where(m_img & m_tab, (tab + img) / 2, one)


def h_validity(present: Tensor, rows: tuple[int, ...] = SCALE_ROWS["multi"]) -> Tensor:
    """``B x 6`` bool: which rows of H (Eq. 10) are available; Eq. 11's mask M is -inf elsewhere.

    Image-specific rows need the image, tabular-specific rows the table, fused shared rows either;
    rows outside ``rows`` (the CMA scale ablation) are never available.
    """
    m_img, m_tab = present[:, 0], present[:, 1]
    valid = torch.stack([m_img, m_img, m_img | m_tab, m_img | m_tab, m_tab, m_tab], dim=1)
    keep = torch.zeros(6, dtype=torch.bool, device=present.device)
    keep[list(rows)] = True
    return valid & keep


class GroupLinear(nn.Module):
    """Per-class linear read-out ``logit_c = w_c . z_c + b_c`` of ``B x C x D`` class features
    (Query2Label's classifier for class queries; DrFuse keeps the diagonal of a Linear likewise)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def forward(self, z: Tensor) -> Tensor:
        """``B x C x D`` -> ``B x C`` logits."""
        return (z * self.weight).sum(-1) + self.bias


class ClassAwareAggregation(nn.Module):
    """CMA, Eq. 11: learnable class queries cross-attend (one head) over H with the modality mask.

    ``Z = softmax(Q_class W_Q (H W_K)^T / sqrt(D) + M) H W_V``; M is -inf on unavailable rows, so
    they get exactly zero weight. A row of H with no available entry (no modality at all) gets an
    all-zero attention row and Z = 0 instead of NaN.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.class_queries = nn.Parameter(torch.randn(num_classes, dim))  # Query2Label's nn.Embedding
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        self.classifier = GroupLinear(num_classes, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def attention(self, h: Tensor, valid: Tensor) -> Tensor:
        """``B x C x 6`` attention weights of the class queries over the rows of ``h`` (``B x 6 x D``)."""
        q = self.w_q(self.class_queries)  # C x D
        scores = torch.einsum("cd,bjd->bcj", q, self.w_k(h)) * self.scale
        has_any = valid.any(dim=1, keepdim=True)  # B x 1
        allowed = (valid | ~has_any).unsqueeze(1)  # a row with nothing available: all allowed, then zeroed
        attn = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        return attn * has_any.unsqueeze(-1).to(attn.dtype)

    def forward(self, h: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """(``B x C`` logits, ``B x C x 6`` attention) for ``h`` (``B x 6 x D``) and ``valid`` (``B x 6``)."""
        attn = self.attention(h, valid)
        z = torch.einsum("bcj,bjd->bcd", attn, self.w_v(h))
        return self.classifier(z), attn

"""DFPL: Disentangled Fine-grained Prototype Learning (Zhou et al., arXiv 2606.05455, 2026).

No official code exists; the paper (Sections III-A to III-D, Eq. 1-13, settings of Section IV) is
the specification. The equations live in :mod:`mmbench.models.dfpl_parts`; this file wires them.
docs/dfpl.md gives the choices made where the paper is silent, why the literal reading of two of them
collapses the prototypes (kept as ``dfpl-literal``), and the diagnostics every DFPL run records.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import IMAGE, MODALITIES, TABULAR, Batch, Output, zero_absent
from ..diagnostics import variance_ratio
from ..encoders.build import build_shared_specific
from ..losses import masked_mean, task_loss
from ..registry import register_method
from . import dfpl_parts as P
from .base import BuildContext, Method
from .params import DFPLConfig

_BRANCHES = ("shared", "spec")


@register_method("dfpl")
class DFPL(Method):
    """DFPL: shared/specific token encoders, SSPM prototypes (Eq. 2-3), PFA alignment (Eq. 4-8) and
    CMA class-query fusion (Eq. 9-11), trained with Eq. 13.

    Loss entries (each already weighted): ``task`` (Eq. 12), ``tdis`` and ``tali`` (alpha x Eq. 1),
    ``div`` and ``pdis`` (beta x Eq. 3 and the prototype-level Eq. 1), ``pali_shared``,
    ``pali_spec`` (gamma x Eq. 5, the latter times omega) and ``cali`` (gamma x Eq. 8). A term that
    involves a modality is averaged over the rows that have it; cross-modal terms (JSD, OT, L_cali)
    over complete rows only, and class prototypes of modality m over the rows with m.

    Choices where the paper is silent or differs from mmbench:
      * The shared and specific encoders of a modality (initialised independently) share all but
        their top ``separate_stages`` stages; the shared part runs once per step (Sec. III-A says
        only "lower layers"; ``separate_stages="all"`` shares the stem only, as DrFuse's code).
      * Eq. 12 is BCE for multi-label tasks; multi-class tasks use softmax cross-entropy.
      * The classifier after CMA is a per-class linear read-out of Z (Query2Label's).
      * Global features are the mean of the encoder tokens (the tabular [CLS] is not a token).
      * The OT gradient is the envelope gradient (the plan is not differentiated through Sinkhorn;
        it equals autograd through a converged unrolled Sinkhorn, docs/dfpl.md).
      * Eq. 5 is computed on Eq. 4's costs in units of their per-problem mean (``ot_cost="relative"``):
        the paper sets eps = 0.1 as a regularisation strength, which only regularises costs of order
        1; raw squared distances (hundreds) make the plan a permutation and the OT term 6x the task
        loss and 33x its gradient at initialisation, and training collapses (``dfpl-literal``).
      * JSD: softmax over the feature dimension by default (``jsd="sigmoid"``: DrFuse's code).
      * omega = 0.1 (no value in the paper); FFN width 4 D; TPE queries initialised N(0, 1/D)
        (``query_init="unit"``; N(0, 1) makes the prototypes 1-12 % input-dependent at initialisation),
        CMA class queries N(0, 1) (Query2Label's ``nn.Embedding``).
      * :meth:`diagnostics` reports prototype variance, CMA attention per row of H and the shared gap
        (docs/dfpl.md, "Diagnostics").
      * Absent inputs are re-zeroed here (the paper zero-fills them), and every per-modality feature
        of an absent row is replaced by zeros before it reaches an output.
    """

    Config = DFPLConfig
    #: 2: relative OT cost and N(0, 1/D) TPE queries by default (docs/dfpl.md); diagnostics()
    version = 2
    cite = ("Zhou et al., Disentangled Fine-Grained Prototype Learning for Incomplete Image-Tabular "
            "Classification, arXiv 2606.05455, 2026")
    save_aux: tuple[str, ...] = ("cma_attention",)

    def __init__(self, ctx: BuildContext, cfg: DFPLConfig) -> None:
        super().__init__(ctx, cfg)
        d, c = ctx.hidden, ctx.info.num_classes
        self.encoders = nn.ModuleDict({m: build_shared_specific(m, ctx.info, ctx.encoders, d,
                                                             cfg.separate_stages)
                                       for m in MODALITIES})
        if cfg.sspm:
            k = cfg.num_prototypes
            self.tpe = nn.ModuleDict({f"{b}_{m}": P.TokenPrototypeExtractor(d, k, cfg.ffn_mult, cfg.query_init)
                                      for m in MODALITIES for b in _BRANCHES})
        if cfg.pfa and cfg.cali:
            self.class_gate = P.ClassPrototypeGate(d, cfg.class_prototype)
        self.rows = cfg.rows()
        if cfg.fusion == "cma":
            self.cma = P.ClassAwareAggregation(d, c)
        elif cfg.fusion == "concat":
            self.classifier = nn.Linear(d * len(self.rows), c)
        else:
            self.classifier = nn.Linear(d, c)
        if cfg.fusion != "cma":
            self.save_aux = ()

    def embed_dims(self) -> dict[str, int]:
        """Each modality's embedding is ``[t_shared; t_spec]`` (2 D)."""
        return {m: 2 * self.ctx.hidden for m in self.modalities}

    def forward(self, batch: Batch) -> Output:
        """Encode, extract prototypes, build H (Eq. 9-10) and classify (Eq. 11 or concat/add)."""
        cfg = self.cfg
        present = batch.present
        inputs = zero_absent(batch.inputs, present)
        aux: dict[str, Tensor] = {}
        for j, m in enumerate(MODALITIES):
            has = present[:, j : j + 1]
            (tok_sh, _), (tok_sp, _) = self.encoders[m](inputs[m])
            for b, tok in zip(_BRANCHES, (tok_sh, tok_sp), strict=True):
                aux[f"t_{b}_{m}"] = torch.where(has, tok.mean(dim=1), 0.0)
                if cfg.sspm:
                    protos = self.tpe[f"{b}_{m}"](tok)
                    aux[f"P_{b}_{m}"] = torch.where(has.unsqueeze(-1), protos, 0.0)
                    aux[f"p_{b}_{m}"] = aux[f"P_{b}_{m}"].mean(dim=1)
        h, valid = self._multiscale(aux, present)
        if cfg.fusion == "cma":
            logits, attn = self.cma(h, valid)
            aux["cma_attention"] = attn
        else:
            h = h[:, list(self.rows)]
            logits = self.classifier(h.flatten(1) if cfg.fusion == "concat" else h.sum(dim=1))
        emb = {m: torch.cat([aux[f"t_shared_{m}"], aux[f"t_spec_{m}"]], dim=1) for m in MODALITIES}
        return Output(logits=logits, embeddings=emb, aux=aux)

    def _multiscale(self, aux: dict[str, Tensor], present: Tensor) -> tuple[Tensor, Tensor]:
        """H of Eq. 10 (``B x 6 x D``, zero rows where unavailable) and its validity mask (``B x 6``)."""
        t_sh = P.fuse_shared(aux["t_shared_image"], aux["t_shared_tabular"], present)
        zeros = torch.zeros_like(t_sh)
        if self.cfg.sspm:
            p_sh = P.fuse_shared(aux["p_shared_image"], aux["p_shared_tabular"], present)
            p_img, p_tab = aux["p_spec_image"], aux["p_spec_tabular"]
        else:
            p_sh = p_img = p_tab = zeros
        h = torch.stack([aux["t_spec_image"], p_img, t_sh, p_sh, aux["t_spec_tabular"], p_tab], dim=1)
        valid = P.h_validity(present, self.rows)
        return torch.where(valid.unsqueeze(-1), h, 0.0), valid

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        """Weighted terms of Eq. 13; a term of an absent modality is omitted for that row."""
        cfg, a = self.cfg, out.aux
        has = {"image": batch.present[:, IMAGE], "tabular": batch.present[:, TABULAR]}
        both = has["image"] & has["tabular"]
        terms = {"task": task_loss(out.logits, batch.y, self.task)}
        # Eq. 1: coarse shared-specific modelling on global features.
        tdis = [masked_mean(P.abs_cosine(a[f"t_shared_{m}"], a[f"t_spec_{m}"]), has[m]) for m in MODALITIES]
        terms["tdis"] = cfg.alpha * sum(tdis)
        tali = P.jsd(a["t_shared_image"], a["t_shared_tabular"], cfg.jsd)
        terms["tali"] = cfg.alpha * masked_mean(tali, both)
        if not cfg.sspm:
            return terms
        # Eq. 3 and prototype-level Eq. 1.
        if cfg.diversity:
            terms["div"] = cfg.beta * sum(masked_mean(P.diversity(a[f"P_{b}_{m}"], cfg.delta), has[m])
                                          for m in MODALITIES for b in _BRANCHES)
        pdis = sum(masked_mean(P.abs_cosine(a[f"p_shared_{m}"], a[f"p_spec_{m}"]), has[m])
                   for m in MODALITIES)
        if cfg.pdis_jsd:
            pdis = pdis + masked_mean(P.jsd(a["p_shared_image"], a["p_shared_tabular"], cfg.jsd), both)
        terms["pdis"] = cfg.beta * pdis
        if not cfg.pfa:
            return terms
        if cfg.pali:  # Eq. 4-5 on complete rows
            shared, spec = self._pali(a, both)
            terms["pali_shared"] = cfg.gamma * shared
            terms["pali_spec"] = cfg.gamma * cfg.omega * spec
        if cfg.cali:  # Eq. 6-8
            terms["cali"] = cfg.gamma * self._cali(a, batch, has, both)
        return terms

    def _cost(self, x: Tensor, y: Tensor) -> Tensor:
        """Eq. 4 cost as set by ``ot_cost`` (``relative``: in units of each problem's mean cost)."""
        cost = P.squared_distances(x, y, self.cfg.ot_cost == "normalized")
        return P.relative_cost(cost) if self.cfg.ot_cost == "relative" else cost

    def _pali(self, a: dict[str, Tensor], rows: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 5 averaged over ``rows`` for the shared and the specific prototypes (0 without rows).

        Only those rows' problems are solved, shared and specific in one batched Sinkhorn call.
        """
        if not bool(rows.any()):
            zero = a["P_shared_image"].sum() * 0.0
            return zero, zero
        c = self.cfg
        cost = torch.cat([self._cost(a[f"P_{b}_image"][rows], a[f"P_{b}_tabular"][rows]) for b in _BRANCHES])
        value = P.entropic_ot(cost, c.ot_epsilon, c.sinkhorn_max_iter, c.sinkhorn_tol, c.sinkhorn_scaling)
        shared, spec = value.chunk(2)
        return shared.mean(), spec.mean()

    def probe_features(self, out: Output) -> dict[str, Tensor]:
        """The shared and specific global features of each modality (and their prototypes, with SSPM)."""
        feats = {f"{m}.{branch}": out.aux[f"t_{b}_{m}"] for m in MODALITIES
                 for branch, b in (("shared", "shared"), ("specific", "spec"))}
        if self.cfg.sspm:
            feats.update({f"{m}.{branch}_prototypes": out.aux[f"p_{b}_{m}"] for m in MODALITIES
                          for branch, b in (("shared", "shared"), ("specific", "spec"))})
        return feats

    @torch.no_grad()
    def diagnostics(self, batch: Batch, out: Output) -> dict[str, float]:
        """Prototype collapse and fusion health (docs/dfpl.md, "Diagnostics"), from one forward pass.

        * ``proto_var_<b>_<m>`` / ``t_var_<b>_<m>``: between-sample variance / squared mean of the
          prototypes / global features of branch b of modality m, over the rows with m;
          ``proto_to_global_var_<b>_<m>`` their quotient (prototypes vs the features they read).
        * ``attn_<row>``: CMA's mean attention on each row of H (Eq. 10) over complete rows and
          classes; ``attn_prototype_rows`` its sum over the three prototype rows.
        * ``shared_gap``: squared distance between the image and tabular aggregated shared prototypes
          over their mean squared norm (complete rows; 0 = they coincide).
        * ``ot_cost_<b>``: mean entry of the raw Eq. 4 cost; ``ot_match_<b>``: the transport cost
          <G, C> over that mean (0 = matched prototypes coincide, about 1 = no closer than any pair);
          ``ot_plan_peak_<b>``: mean over i of K max_j G_ij of the Eq. 5 plan (1 = a permutation,
          1/K = uniform).
        """
        cfg, a = self.cfg, out.aux
        has = {"image": batch.present[:, IMAGE], "tabular": batch.present[:, TABULAR]}
        both = has["image"] & has["tabular"]
        res: dict[str, float] = {}
        for m in MODALITIES:
            for b in _BRANCHES:
                res[f"t_var_{b}_{m}"] = t_var = variance_ratio(a[f"t_{b}_{m}"][has[m]])
                if cfg.sspm:
                    res[f"proto_var_{b}_{m}"] = p_var = variance_ratio(a[f"P_{b}_{m}"][has[m]])
                    res[f"proto_to_global_var_{b}_{m}"] = p_var / t_var if t_var > 0 else float("nan")
        if not bool(both.any()):
            return res
        if "cma_attention" in a:
            share = a["cma_attention"][both].float().mean(dim=(0, 1))  # 6
            res.update({f"attn_{name}": float(v) for name, v in zip(P.H_ROWS, share, strict=True)})
            res["attn_prototype_rows"] = float(share[list(P.SCALE_ROWS["prototype"])].sum())
        if cfg.sspm:
            img, tab = a["p_shared_image"][both].float(), a["p_shared_tabular"][both].float()
            sq_norm = 0.5 * (img.pow(2).sum(-1) + tab.pow(2).sum(-1)).mean()
            res["shared_gap"] = float((img - tab).pow(2).sum(-1).mean() / sq_norm.clamp_min(1e-12))
            for b in _BRANCHES:
                x, y = a[f"P_{b}_image"][both].float(), a[f"P_{b}_tabular"][both].float()
                cost = P.squared_distances(x, y)
                plan = P.sinkhorn_plan(self._cost(x, y), cfg.ot_epsilon, cfg.sinkhorn_max_iter, cfg.sinkhorn_tol,
                                       cfg.sinkhorn_scaling)
                value = (plan * cost).sum((1, 2))
                res[f"ot_cost_{b}"] = float(cost.mean())
                res[f"ot_match_{b}"] = float((value / cost.mean((1, 2)).clamp_min(1e-12)).mean())
                res[f"ot_plan_peak_{b}"] = float(plan.amax(-1).mean() * plan.shape[-1])
        return res

    def _cali(self, a: dict[str, Tensor], batch: Batch, has: dict[str, Tensor], both: Tensor) -> Tensor:
        """Eq. 8 averaged over complete rows, with class prototypes of Eq. 6-7 per modality."""
        y = batch.y
        targets = y.float() if self.task == "multilabel" else F.one_hot(y.long(), self.num_classes).float()
        nu, seen = {}, []
        for m in MODALITIES:
            glo, ok = P.class_means(a[f"t_shared_{m}"], targets, has[m])
            proto, _ = P.class_means(a[f"p_shared_{m}"], targets, has[m])
            nu[m] = self.class_gate(glo, proto)
            seen.append(ok)
        classes = seen[0] & seen[1]  # classes present in the batch for both modalities
        per_row = P.cali(a["p_shared_image"], nu["image"], a["p_shared_tabular"], nu["tabular"], classes)
        return masked_mean(per_row, both)

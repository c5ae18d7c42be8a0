"""The ``mce`` balancer: Modality Capability Enhancement (Zhao et al., Pattern Recognition 172, 2026).

MCE adds, to the method's own objective, per-modality terms re-weighted by learning factors (LCE)
and two representation tasks (RCE), using the method only through the presence mask:

* LCE (docs/methods.md#mce-factors): dataset-level ``a_m = N / N_m`` (inverse availability of m in the
  training split) and batch-level ``b_m = max(0, c_m - phi_m) / n_m``, where ``c_m`` counts the batch
  rows with m that a frozen unimodal *reference* predictor of m classifies correctly, ``phi_m`` is the
  Shapley value of m for ``v(S)`` = correct fused predictions with only the modalities ``S`` kept
  (summed over the rows whose available set contains S; the full set reuses the main prediction),
  and ``n_m`` counts the rows with m. Both are computed without gradient and scale the terms of m.
* RCE (docs/methods.md#mce-terms): subset prediction, the classification loss with the method re-run on
  each non-empty proper subset S of a row's available set A_i, weighted ``1 / (2^|A_i| - 1)``, summed
  and divided by the rows with any modality; cross-modal completion, L1 between the full-input
  embedding of each modality in ``A_i - S`` and its completion from the subset forward, same
  normalisation.
* Unimodal ("sep") terms: a classifier per modality on the main forward's pooled embedding.

Total added to the method/head terms: ``w_rec L_rec + w_sep L_sep + w_sub L_sub``.

``v(S)`` pools row populations, as the official code does: ``v({image})`` counts the image-only rows
(main forward) together with the complete rows re-run with the table dropped, while ``v({image,
tabular})`` counts the complete rows only. Its Shapley values therefore mix the fused model's skill
on rows that are image-only by nature or protocol with its skill on complete rows deprived of a
modality; ``c_m`` likewise counts every row with m.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from ..data.batch import MODALITIES, Batch, Output
from ..encoders.build import build_encoder
from ..losses import task_loss, task_loss_per_sample
from ..models.base import BuildContext
from ..registry import register_balancer
from ..shapley import shapley_table
from .base import Balancer
from .params import MCEConfig

if TYPE_CHECKING:
    from ..pipeline import Pipeline
    from ..train import Loader


class ReferencePredictor(nn.Module):
    """Unimodal reference model of one modality: a fresh encoder and a linear classifier."""

    def __init__(self, modality: str, ctx: BuildContext) -> None:
        super().__init__()
        self.modality = modality
        self.encoder = build_encoder(modality, ctx.info, ctx.encoders, ctx.hidden)
        self.fc = nn.Linear(ctx.hidden, ctx.info.num_classes)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """Logits from this modality's inputs."""
        return self.fc(self.encoder(inputs)[1])


def correct(logits: Tensor, y: Tensor, task: str) -> Tensor:
    """Per-row correctness in [0, 1]: argmax hit (multi-class/binary), fraction of labels right
    with threshold logit > 0 (multi-label)."""
    if task == "multilabel":
        return ((logits.detach() > 0) == (y > 0.5)).float().mean(dim=1)
    return (logits.detach().argmax(dim=1) == y).float()


@register_balancer("mce")
class MCEBalancer(Balancer):
    """MCE's learning factors and capability-enhancement terms (docs/methods.md#mce), for any method.

    Deviations from the official code (also in ``balancers/mce.yaml`` notes):
      * Subsets are forced through the presence mask (``batch.with_present``): the whole pipeline
        (encoders included) is re-run on the subset rows, where the official code re-runs only its
        fusion transformer on cached features. One batched forward covers every (row, subset) pair.
      * A method's embedding of an absent modality is zero by contract, so the completion target is
        predicted by a small MLP per modality from the subset forward's embeddings (the role of the
        official fusion transformer's zeroed token); the unimodal heads are likewise owned here.
      * The unimodal term sums CE over the rows with m and divides by the rows with any modality;
        the official code's masked logits add a constant log C per absent row, which has no gradient.
      * The reference predictors are trained in ``setup`` (``ref_epochs``, Adam ``ref_lr``) on the
        rows where their modality is available, then frozen; the official code loads checkpoints.
      * The Shapley players are the modalities present somewhere in the batch; one absent from the
        whole batch gets b_m = 0 (the official code fails there).
      * The terms are added in training only; evaluation losses are the method's (and head's).
      * Training masks are the protocol's (static) unless ``train_masks="per_epoch"``, which redraws
        them every epoch, independently per modality, as the official IEMOCAP trainer effectively does
        (its mask matrix is indexed by batch position under a shuffled loader); see :meth:`train_batch`.
    """

    Config = MCEConfig
    cite = ("Zhao et al., MCE: Towards a General Framework for Handling Missing Modalities under "
            "Imbalanced Missing Rates, Pattern Recognition 172 (2026) 112591")

    def __init__(self, ctx: BuildContext, embed_dims: dict[str, int], cfg: MCEConfig) -> None:
        super().__init__(ctx, embed_dims, cfg)
        self.task = ctx.info.task
        self.mods = [m for m in MODALITIES if embed_dims.get(m)]
        self.slots = [(m, MODALITIES.index(m)) for m in self.mods]
        n_in = sum(embed_dims[m] for m in self.mods)
        C = ctx.info.num_classes
        self.unimodal = nn.ModuleDict({m: nn.Sequential(nn.Linear(embed_dims[m], embed_dims[m]), nn.ReLU(),
                                                        nn.Linear(embed_dims[m], C)) for m in self.mods})
        self.completion = nn.ModuleDict({m: nn.Sequential(nn.Linear(n_in, embed_dims[m]), nn.GELU(),
                                                          nn.Linear(embed_dims[m], embed_dims[m]))
                                         for m in self.mods})
        self.references = (nn.ModuleDict({m: ReferencePredictor(m, ctx) for m in self.mods})
                           if cfg.use_b else None)
        M = len(MODALITIES)
        self.register_buffer("a", torch.ones(M), persistent=False)
        self.register_buffer("shapley_w", shapley_table(M, cfg.shapley).float(), persistent=False)
        self.register_buffer("ref_correct", torch.zeros(0, M), persistent=False)
        # per-epoch training masks (train_masks="per_epoch"): the training loader, its rows' natural
        # presence, how many rows lose each modality, the run's mask seed and the current epoch's mask
        self._mask_loader: Loader | None = None
        self._mask_rows = torch.zeros(0, dtype=torch.long)
        self._mask_natural = torch.zeros(0, M, dtype=torch.bool)
        self._mask_drops = torch.zeros(M, dtype=torch.long)
        self._mask_seed = 0
        self._epoch_present: Tensor | None = None
        self._epoch_absent = torch.zeros(0)
        self._ready = False
        self._frozen = False
        #: last step's factors (a, b, phi, c) for inspection; not loss terms
        self.stats: dict[str, Tensor] = {}

    # ------------------------------------------------------------------------------------- setup
    def train(self, mode: bool = True) -> MCEBalancer:
        """Keep the frozen reference predictors in eval mode."""
        super().train(mode)
        if self.references is not None and self._frozen:
            self.references.eval()
        return self

    def setup(self, pipeline: Pipeline, loaders: dict[str, Loader]) -> None:
        """a_m from the training presence mask; train, freeze (and score) the reference predictors."""
        train = loaders["train"]
        rows = getattr(train, "indices", None)
        present = train.present if rows is None else train.present[rows]
        present = present.to(torch.bool)
        n_any = present.any(dim=1).sum().float()
        n_m = present.sum(dim=0).float()
        a = torch.where(n_m > 0, n_any / n_m.clamp_min(1.0), torch.zeros_like(n_m))
        self.a.copy_(a.to(self.a.device))
        if self.cfg.train_masks == "per_epoch":
            self._setup_masks(train)
        if self.references is not None:
            self._train_references(train)
            if self.cfg.cache_reference:
                # per-epoch masks show a row's modality in some epochs only: score it wherever it exists
                natural = self._natural_presence(train) if self.cfg.train_masks == "per_epoch" else None
                self._score_references(train, natural)
        self._ready = True

    def _batches(self, loader: Loader, shuffle: bool, generator: torch.Generator | None = None,
                 present: Tensor | None = None):
        rows = getattr(loader, "indices", None)
        rows = torch.arange(len(loader.split)) if rows is None else rows
        if shuffle:
            rows = rows[torch.randperm(len(rows), generator=generator)]
        device = getattr(loader, "device", self.a.device)
        bs = int(loader.batch_size)
        present = loader.present if present is None else present
        for start in range(0, len(rows), bs):
            yield loader.split.batch(rows[start:start + bs], present).to(device)

    # ------------------------------------------------------------------- per-epoch training masks
    @staticmethod
    def _natural_presence(loader: Loader) -> Tensor:
        natural = getattr(getattr(loader, "split", None), "natural_present", None)
        if natural is None:
            raise RuntimeError("balancer 'mce': train_masks='per_epoch' needs the training loader's split "
                               "and its natural presence (split.natural_present)")
        return natural.to(torch.bool).cpu()

    def _setup_masks(self, loader: Loader) -> None:
        """Per modality, the number of training rows the protocol drops it from (beyond natural
        missingness); every epoch then drops it from that many rows again, drawn afresh."""
        rows = getattr(loader, "indices", None)
        natural = self._natural_presence(loader)
        rows = torch.arange(len(natural)) if rows is None else rows.cpu()
        self._mask_loader = loader
        self._mask_rows = rows
        self._mask_natural = natural[rows]
        protocol = loader.present.to(torch.bool).cpu()[rows]
        self._mask_drops = (self._mask_natural & ~protocol).sum(dim=0)
        # from the run's seed, like the reference stage: the trainer's own generators are untouched
        self._mask_seed = int(torch.initial_seed() % (2**63))
        self._epoch_present = None

    def begin_epoch(self, epoch: int) -> None:
        """``train_masks="per_epoch"``: draw this epoch's training mask (a no-op otherwise)."""
        if self._mask_loader is None:
            return
        rng = np.random.default_rng(np.random.SeedSequence([self._mask_seed, int(epoch), 2029]))
        present = self._mask_natural.clone()
        for j in range(present.shape[1]):
            have = present[:, j].nonzero().flatten().numpy()
            drop = rng.permutation(have)[: int(self._mask_drops[j])]
            present[torch.from_numpy(drop).long(), j] = False
        full = torch.zeros(len(self._mask_loader.split), present.shape[1], dtype=torch.bool)
        full[self._mask_rows] = present
        self._epoch_present = full
        # training rows without each modality this epoch, and rows left with none (skipped)
        self._epoch_absent = torch.cat([(~present).sum(dim=0), (~present.any(dim=1)).sum().view(1)]).float()

    def train_batch(self, batch: Batch) -> Batch:
        """``train_masks="per_epoch"``: the batch's rows re-read under this epoch's mask; rows that
        lose every modality are left out (the protocol removes such rows too). Otherwise unchanged."""
        if self._mask_loader is None:
            return batch
        if self._epoch_present is None:
            self.begin_epoch(0)
        assert self._epoch_present is not None
        idx = batch.index.cpu()
        idx = idx[self._epoch_present[idx].any(dim=1)]
        device = batch.present.device
        return self._mask_loader.split.batch(idx, self._epoch_present, None if device.type == "cpu" else device)

    def _train_references(self, loader: Loader) -> None:
        assert self.references is not None
        self._frozen = False
        self.references.train()
        for p in self.references.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam(self.references.parameters(), lr=self.cfg.ref_lr)
        # own generator (from the run's seed): the trainer's loader order is left untouched
        gen = torch.Generator().manual_seed(torch.initial_seed() % (2**63))
        for _ in range(self.cfg.ref_epochs):
            for batch in self._batches(loader, shuffle=True, generator=gen):
                loss = None
                for m, j in self.slots:
                    keep = batch.present[:, j]
                    if int(keep.sum()) < 2:  # BatchNorm needs two rows
                        continue
                    sub = batch.select(keep)
                    term = task_loss(self.references[m](sub.inputs[m]), sub.y, self.task)
                    loss = term if loss is None else loss + term
                if loss is not None:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        for p in self.references.parameters():
            p.requires_grad_(False)
        self.references.eval()
        self._frozen = True

    @torch.no_grad()
    def _score_references(self, loader: Loader, present: Tensor | None = None) -> None:
        assert self.references is not None
        table = torch.zeros(len(loader.split), len(MODALITIES), device=self.a.device)
        for batch in self._batches(loader, shuffle=False, present=present):
            table[batch.index.to(table.device)] = self._reference_correct(batch).to(table.device)
        self.ref_correct = table

    @torch.no_grad()
    def _reference_correct(self, batch: Batch) -> Tensor:
        """``B x M`` correctness of the reference predictors (0 where the modality is absent)."""
        assert self.references is not None
        out = torch.zeros(len(batch), len(MODALITIES), device=batch.present.device)
        for m, j in self.slots:
            hit = correct(self.references[m](batch.inputs[m]), batch.y, self.task)
            out[:, j] = hit * batch.present[:, j].float()
        return out

    # ------------------------------------------------------------------------------------ losses
    def _task_per_sample(self, pipeline: Pipeline, batch: Batch, out: Output) -> Tensor:
        """The classification loss per row, as the head defines it (DPL: ArcFace) or CE/BCE."""
        fn = getattr(pipeline.head, "per_sample_task_loss", None) if pipeline.head.replaces_task else None
        if fn is not None:
            return fn(batch, out)
        return task_loss_per_sample(out.logits, batch.y, self.task)

    def factors(self, batch: Batch, main_correct: Tensor, sub_pattern: Tensor, sub_correct: Tensor,
                reference_correct: Tensor) -> tuple[Tensor, Tensor]:
        """(b, phi): the batch-level factor of each modality slot and its Shapley value (no grad).

        ``v(S)`` sums the correct predictions of the rows whose available set is S (main forward)
        and of the subset forwards with pattern S (so a singleton's value pools rows that have only
        that modality with complete rows re-run without the other; see the module docstring);
        ``c_m`` sums ``reference_correct`` over the rows
        with m; ``b_m = max(0, c_m - phi_m) / n_m`` (0 where ``n_m = 0``).
        """
        pres = batch.present.to(torch.bool)
        M = pres.shape[1]
        bits = 2 ** torch.arange(M, device=pres.device)
        pattern = presence_pattern(pres)
        v = torch.zeros(2**M, device=pres.device)
        v.index_add_(0, pattern, main_correct.float())
        v.index_add_(0, sub_pattern, sub_correct.float())
        v[0] = 0.0
        players = (pres.any(dim=0).long() * bits).sum()
        phi = self.shapley_w.to(v.device)[players] @ v
        c = (reference_correct.float() * pres.float()).sum(dim=0)
        n = pres.float().sum(dim=0)
        b = torch.where(n > 0, (c - phi).clamp_min(0.0) / n.clamp_min(1.0), torch.zeros_like(n))
        return b, phi

    def losses(self, pipeline: Pipeline, batch: Batch, out: Output,
               terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """Add ``mce_sub``, ``mce_rec_<m>`` and ``mce_sep_<m>`` (each weighted) in training."""
        if not self.training:
            return terms
        if not self._ready:
            raise RuntimeError("balancer 'mce': setup(pipeline, loaders) must run before training "
                               "(it measures availability and trains the reference predictors)")
        cfg = self.cfg
        pres = batch.present.to(torch.bool)
        M = pres.shape[1]
        bits = 2 ** torch.arange(M, device=pres.device)
        pattern = presence_pattern(pres)
        n_any = (pattern > 0).sum().float().clamp_min(1.0)
        # one forward for every (row, non-empty proper subset of its available set)
        row_idx, sub_pat, weight = subset_rows(pres)
        inv_p = weight.new_ones(weight.shape)  # inverse inclusion probability of each pair
        if 0 < cfg.max_subset_rows < len(row_idx):
            pick = torch.randperm(len(row_idx), device=row_idx.device)[: cfg.max_subset_rows]
            pick = pick.sort().values
            inv_p = inv_p[pick] * (len(row_idx) / cfg.max_subset_rows)
            row_idx, sub_pat, weight = row_idx[pick], sub_pat[pick], weight[pick] * inv_p
        zero = out.logits.new_zeros(()).float()
        if len(row_idx):
            keep = ((sub_pat[:, None] & bits) > 0)
            sub = batch.select(row_idx).with_present(keep)
            sub_out = pipeline(sub)
            l_sub = (weight * self._task_per_sample(pipeline, sub, sub_out).float()).sum() / n_any
            sub_correct = correct(sub_out.logits, sub.y, self.task) * inv_p
        else:
            sub_out, l_sub = None, zero
            sub_correct = out.logits.new_zeros(0)
        main_correct = correct(out.logits, batch.y, self.task)
        if self.references is not None:
            if cfg.cache_reference and self.ref_correct.shape[0] > int(batch.index.max()):
                ref = self.ref_correct.to(pres.device)[batch.index]
            else:
                ref = self._reference_correct(batch)
            b, phi = self.factors(batch, main_correct, sub_pat, sub_correct, ref)
        else:
            b, phi = torch.ones(M, device=pres.device), torch.zeros(M, device=pres.device)
        a = self.a.to(pres.device) if cfg.use_a else torch.ones(M, device=pres.device)
        factor = (a * b).detach()
        self.stats = {"a": a.detach(), "b": b.detach(), "phi": phi.detach()}
        if self._mask_loader is not None:  # per-epoch masks: [absent image, absent tabular, rows skipped]
            self.stats["epoch_absent"] = self._epoch_absent

        new = dict(terms)
        new["mce_sub"] = cfg.w_sub * l_sub
        # cross-modal completion: modality m in A_i - S predicted from the subset forward's embeddings
        if sub_out is not None:
            src = torch.cat([sub_out.embeddings[k].float() * sub.present[:, c : c + 1].float()
                             for k, c in self.slots], dim=1)
        for m, j in self.slots:
            if sub_out is not None:
                target_rows = ((pattern[row_idx] & ~sub_pat) & (1 << j)) > 0
                pred = self.completion[m](src)
                target = out.embeddings[m][row_idx].float()
                if cfg.detach_rec_target:
                    target = target.detach()
                l1 = (pred - target).abs().mean(dim=1)
                l_rec = (weight * l1 * target_rows.float()).sum() / n_any
            else:
                l_rec = zero
            new[f"mce_rec_{m}"] = cfg.w_rec * factor[j] * l_rec
        # unimodal terms on the main forward's embeddings, mean over modalities
        for m, j in self.slots:
            ce = task_loss_per_sample(self.unimodal[m](out.embeddings[m].float()), batch.y, self.task)
            l_sep = (ce * pres[:, j].float()).sum() / n_any
            new[f"mce_sep_{m}"] = cfg.w_sep * factor[j] * l_sep / len(self.mods)
        return new


def presence_pattern(present: Tensor) -> Tensor:
    """Bitmask of each row's available set (bit j = modality slot j present)."""
    bits = 2 ** torch.arange(present.shape[1], device=present.device)
    return (present.to(torch.long) * bits).sum(dim=1)


def subset_rows(present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every (row i, non-empty proper subset S of its available set A_i), ordered by S then row.

    Returns the row indices, the subsets as bitmasks, and the normalisation weight
    ``1 / (2^|A_i| - 1)`` of L_sub and L_rec for each pair. Rows with a single modality have no
    proper subset and do not appear.
    """
    M = present.shape[1]
    pattern = presence_pattern(present)
    rows, subs = [], []
    for s in range(1, 2**M):
        idx = (((pattern & s) == s) & (pattern != s)).nonzero(as_tuple=True)[0]
        rows.append(idx)
        subs.append(torch.full_like(idx, s))
    row_idx, sub_pat = torch.cat(rows), torch.cat(subs)
    size = sum((pattern[row_idx] >> j) & 1 for j in range(M)).float()
    return row_idx, sub_pat, 1.0 / (2.0**size - 1.0)

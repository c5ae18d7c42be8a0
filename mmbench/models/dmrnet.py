"""DMRNet: robust multimodal learning via representation decoupling (Wei, Luo, Wang, Luo, ECCV 2024).

Per-modality encoders give pooled features ``a`` (image) and ``v`` (table); the feature of a modality
that is absent is zeroed **after** the encoder (DMRNet's native representation, docs/methods.md#dmrnet), and
``h = [a; v]``. The fused input is embedded as a Gaussian (probabilistic embedding):
``mu = BN(W_mu h)``, ``log sigma^2 = BN(W_s h)``; training samples ``z = mu + eps * sigma``, evaluation
uses ``z = mu``; logits ``= W z``. Loss terms:

* ``task``: CE on the sampled ``z``;
* ``kl``: ``alpha * 1/B sum_i 1/2 sum_k (sigma^2 + mu^2 - log sigma^2 - 1)``, i.e.
  ``KL(N(mu, sigma^2) || N(0, I))`` averaged over the batch;
* ``hcr``: the hard-combination regularizer, ``beta * 1/B sum_i 1[c_i = c_hard] CE_i``: extra weight on
  the rows whose modality combination is the hardest one. The hard combination is the unimodal
  combination with the larger mean predicted variance ``mean_k sigma^2``, accumulated over the
  warm-up epochs.

Training also draws, for each complete row, a modality combination uniformly from {image, table,
both} (the official code's per-sample modality dropping; ``modality_dropout=False`` turns it off).

Variance statistics (buffers ``hcr_var_sum``, ``hcr_rows``; index 0 = image-only, 1 = tabular-only)
are accumulated in ``losses`` during training for the first ``hcr_warmup_epochs`` epochs (epochs
0..5 in the code) and are **not reset per epoch**: the code sums per-epoch means over the warm-up
and decides once, at its end, which combination is hard; the choice (buffer ``hcr_weak``) is then
fixed for the rest of training and the regularizer is on from the next epoch. A new run (a new
module) starts from empty statistics. The epoch index comes from ``begin_epoch`` when the trainer
calls it, otherwise from the trainer's switch back to training mode after each validation pass.

Deviations (also in ``methods/dmrnet.yaml`` ``notes:``):

* ``hcr_mode="fixed"`` (default) is the per-sample term above. The official code multiplies a (B,)
  loss by a (B,1,1,1) indicator, which broadcasts to (B,1,1,B): its term equals
  ``n_hard * mean_i CE_i`` (the whole batch re-weighted); ``hcr_mode="code"`` reproduces that.
* The code's statistics are per-step means divided by the last step index, summed only over epochs
  whose *test* accuracy improved, and default to "visual is hard" if epoch 5 did not improve; here
  they are row-weighted means over every warm-up training step (no test-set dependence).
* The official run uses SGD (lr 1e-3, momentum 0.9, wd 1e-4, 100 epochs); here the benchmark's optimiser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import IMAGE, MODALITIES, TABULAR, Batch, Output
from ..encoders.build import build_encoder
from ..losses import compute_dtype, task_loss, task_loss_per_sample
from ..registry import register_method
from .base import BuildContext, Method
from .params import DMRNetConfig


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """``1/B sum_i 1/2 sum_k (sigma^2 + mu^2 - log sigma^2 - 1)``: KL(N(mu, sigma^2) || N(0, I)), batch mean.

    (Computed in :func:`~mmbench.losses.compute_dtype` of the inputs; ``sigma^2 = exp(log sigma^2)``.)
    """
    dtype = compute_dtype(mu, logvar)
    mu, logvar = mu.to(dtype), logvar.to(dtype)
    per_row = 0.5 * (logvar.exp() + mu.pow(2) - logvar - 1.0).sum(dim=1)
    return per_row.mean() if per_row.numel() else per_row.sum()


def hard_combination_loss(per_sample: Tensor, hard: Tensor, mode: str = "fixed") -> Tensor:
    """Hard-combination regularizer before its weight beta.

    ``fixed``: ``1/B sum_i 1[hard_i] l_i`` (each hard row gets extra weight, same scale as the task CE;
    0 when no row is hard). ``code``: the official broadcasting, ``n_hard * 1/B sum_i l_i``.
    """
    per_sample = per_sample.to(compute_dtype(per_sample))
    b = max(per_sample.shape[0], 1)
    hard = hard.to(per_sample.dtype)
    if mode == "fixed":
        return (per_sample * hard).sum() / b
    return hard.sum() * per_sample.sum() / b


def combination_index(present: Tensor) -> Tensor:
    """Per row: 0 image-only, 1 tabular-only, -1 otherwise (the hard-combination candidates)."""
    img, tab = present[:, IMAGE], present[:, TABULAR]
    idx = torch.full_like(img, -1, dtype=torch.long)
    idx = torch.where(img & ~tab, torch.zeros_like(idx), idx)
    return torch.where(tab & ~img, torch.ones_like(idx), idx)


def _sync_decided(module: nn.Module, _keys: object) -> None:
    """After ``load_state_dict``: refresh the host-side flag from the loaded ``hcr_weak`` buffer."""
    module._decided = int(module.hcr_weak) >= 0


class _BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that normalises a one-row training batch with its running statistics."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


@register_method("dmrnet")
class DMRNet(Method):
    """DMRNet (Wei et al., ECCV 2024): Gaussian embedding of the fused feature, KL to N(0, I) and the
    hard-combination regularizer. ``Output.embeddings`` are the pooled encoder features ``a``, ``v``
    (zeroed where absent); ``aux`` holds ``mu``, ``logvar`` and ``present_used``."""

    Config = DMRNetConfig
    cite = "Wei, Luo, Wang, Luo. Robust Multimodal Learning via Representation Decoupling. ECCV 2024"

    def __init__(self, ctx: BuildContext, cfg: DMRNetConfig) -> None:
        super().__init__(ctx, cfg)
        d = ctx.hidden
        width = d * len(MODALITIES)
        self.encoders = nn.ModuleDict({m: build_encoder(m, ctx.info, ctx.encoders, d) for m in MODALITIES})
        self.mu_head = nn.Sequential(nn.Linear(width, width), _BatchNorm1d(width))
        self.logvar_head = nn.Sequential(nn.Linear(width, width), _BatchNorm1d(width))
        self.classifier = nn.Linear(width, self.num_classes)
        self.register_buffer("hcr_var_sum", torch.zeros(2))
        self.register_buffer("hcr_rows", torch.zeros(2))
        self.register_buffer("hcr_weak", torch.tensor(-1, dtype=torch.long))
        self.epoch = 0
        self._steps_in_epoch = 0
        self._explicit_epochs = False
        self._decided = False  # host-side mirror of hcr_weak >= 0 (no device sync per step)
        self.register_load_state_dict_post_hook(_sync_decided)

    # ---------------------------------------------------------------------------- epoch tracking
    def begin_epoch(self, epoch: int) -> None:
        """Trainer hook: the 0-based epoch about to start (disables the mode-switch fallback)."""
        self._explicit_epochs = True
        self.epoch = int(epoch)
        self._steps_in_epoch = 0

    def train(self, mode: bool = True) -> DMRNet:
        """Fallback epoch counter: returning to training mode after training steps starts a new epoch
        (the trainer validates once at the end of every epoch)."""
        if mode and not self.training and self._steps_in_epoch > 0 and not self._explicit_epochs:
            self.epoch += 1
            self._steps_in_epoch = 0
        return super().train(mode)

    # ----------------------------------------------------------------------------------- forward
    def _training_view(self, present: Tensor) -> Tensor:
        """Complete rows draw (1,0), (0,1) or (1,1) uniformly; incomplete rows keep their pattern."""
        complete = present.all(dim=1)
        draw = torch.randint(0, 3, (present.shape[0],), device=present.device)  # 0 img, 1 tab, 2 both
        view = present.clone()
        view[:, TABULAR] &= ~(complete & (draw == 0))
        view[:, IMAGE] &= ~(complete & (draw == 1))
        return view

    def forward(self, batch: Batch) -> Output:
        """Encoders -> features zeroed where absent -> Gaussian embedding -> linear classifier."""
        present = batch.present
        batch = batch.with_present(present)  # really absent inputs are zero (as collate makes them)
        if self.training and self.cfg.modality_dropout:
            present = self._training_view(present)  # simulated drops: real input, zeroed output
        feats = {}
        for j, m in enumerate(MODALITIES):
            _, pooled = self.encoders[m](batch.inputs[m])
            feats[m] = pooled * present[:, j : j + 1].to(pooled.dtype)
        h = torch.cat([feats[m] for m in MODALITIES], dim=1)
        mu, logvar = self.mu_head(h), self.logvar_head(h)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return Output(logits=self.classifier(z), embeddings=feats,
                      aux={"mu": mu, "logvar": logvar, "present_used": present})

    # ------------------------------------------------------------------------------------ losses
    def _update_hard_combination(self, logvar: Tensor, combo: Tensor) -> None:
        """Accumulate the mean predicted variance per unimodal combination during the warm-up epochs;
        at the first step after it, choose the combination with the larger mean once. (If the warm-up
        saw no unimodal row at all, statistics keep accumulating until one is seen.)"""
        cfg: DMRNetConfig = self.cfg
        if self._decided:
            return
        warmup = self.epoch < cfg.hcr_warmup_epochs
        if warmup or not bool((self.hcr_rows > 0).any()):
            var = logvar.detach().float().exp().mean(dim=1)
            for c in (0, 1):
                rows = (combo == c).float()
                self.hcr_var_sum[c] += (var * rows).sum()
                self.hcr_rows[c] += rows.sum()
        if not warmup and bool((self.hcr_rows > 0).any()):
            mean = torch.where(self.hcr_rows > 0, self.hcr_var_sum / self.hcr_rows.clamp_min(1.0),
                               torch.full_like(self.hcr_var_sum, -float("inf")))
            self.hcr_weak.fill_(int(mean.argmax()))
            self._decided = True

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        """``task`` (CE on sampled z), ``kl`` (alpha * KL), ``hcr`` (beta * hard-combination term)."""
        cfg: DMRNetConfig = self.cfg
        combo = combination_index(out.aux["present_used"])
        if self.training:
            self._steps_in_epoch += 1
            with torch.no_grad():
                self._update_hard_combination(out.aux["logvar"], combo)
        native = out.aux.get("native_logits", out.logits)
        hard = (combo == self.hcr_weak) & (self.hcr_weak >= 0)
        per_sample = task_loss_per_sample(native, batch.y, self.task)
        return {
            "task": task_loss(out.logits, batch.y, self.task),
            "kl": cfg.kl_weight * gaussian_kl(out.aux["mu"], out.aux["logvar"]),
            "hcr": cfg.hcr_weight * hard_combination_loss(per_sample, hard, cfg.hcr_mode),
        }

"""IF-MMIN: invariant-feature missing-modality imagination network (Zuo et al., ICASSP 2023).

Two stages in one run (``stages()``):

1. ``pretrain`` on complete training rows only: per-modality encoders ``e_m = Enc_m(x_m)``, a shared
   invariant encoder ``h_m = Inv(e_m)`` (weights shared across modalities), a classifier on
   ``[E; H]`` and the CMD loss (K = 5) between the invariant features of the modalities
   (paper Sec. 2.1, invariant feature learning).
2. ``student``: the encoders and ``Inv`` continue from stage 1, a frozen copy of them is the teacher.
   The student sees the input with modalities zeroed (IF-MMIN's native missing representation),
   ``E = [e_img; e_tab]`` and ``H' = [Inv(e_img); Inv(e_tab)]`` go through the cascaded residual
   autoencoder ("IF-IM", Sec. 2.2), whose concatenated block latents feed the classifier.
   Loss (Sec. 2.3): ``L = w_ce CE + w_mse MSE(E_hat, T) + w_inv MSE(H', H)`` with T the teacher
   embedding of the modalities missing to the student and H the teacher invariant features of the
   full input.

Adaptation to a benchmark with incomplete *training* data (docs/methods.md#if-mmin-port): the teacher targets
exist only where the modality is really present, so both MSE terms are masked per (row, modality)
to slots whose ground truth exists, dividing by the number of covered elements (zero when none).
CMD compares the distribution of ``h_img`` over rows with an image to that of ``h_tab`` over rows
with a table (in stage 1 every row is complete).

``Output.embeddings[m]`` is the student's pooled encoder embedding ``e_m`` (zero rows where ``m`` is
absent); ``aux`` holds ``invariant`` (``H'``, B x 2d), ``recon`` (``E_hat``), ``latent`` (AE latents)
and ``present_used`` (the presence the student actually saw, which in training includes the
simulated drops).

Deviations (also in ``methods/ifmmin.yaml`` ``notes:``):

* ``student_patterns="all"`` (default): a complete training row is shown to the student as complete,
  image-only or tabular-only with equal probability. The official code draws only the incomplete
  patterns (its test set has no complete condition); ``"incomplete"`` reproduces that.
* ``cascade="paper"`` (default): block k's input is (output of block k-1) + H' and ``E_hat`` is the
  transition of the last block's output; this is also the official ``ResidualAE``
  (``models/networks/autoencoder_2.py``) at the pinned HEAD f4d65fc4. ``cascade="code"`` reproduces
  the version first published (commit a4b6ef40, used until 2024), which accumulates ``x <- x + H'``
  and discards the intermediate decoder outputs (docs/methods.md#if-mmin-cascade-wirings).
* ``recon_target="missing"`` (default): the reconstruction term covers only the slots of modalities
  missing to the student. ``"code"`` also regresses the slots of the modalities the student sees onto
  the teacher's embedding of a zeroed input (the MMIN convention ``T = Enc_T(x * (1 - e))``).
* The CMD terms use a zero-safe norm (value 0 and a finite gradient when two moments coincide); the
  official ``sqrt`` has an infinite gradient there.
* The optimiser is the benchmark's (one per stage); the paper uses Adam lr 2e-4 with beta1 0.9 (stage 1)
  and 0.5 (stage 2), 10+10 and 20+20 epochs with linear decay, and gradient clipping 0.5 / 1.0.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..data.batch import IMAGE, MODALITIES, TABULAR, Batch, Output
from ..encoders.build import build_encoder
from ..losses import compute_dtype, masked_mean, task_loss
from ..registry import register_method
from .base import BuildContext, Method, Stage
from .params import IFMMINConfig


def _zero_safe_norm(v: Tensor) -> Tensor:
    """Euclidean norm with value 0 and gradient 0 (not NaN) at ``v = 0``."""
    s = (v * v).sum()
    return torch.where(s > 0, s.clamp_min(1e-30).sqrt(), s * 0.0)


def cmd(x: Tensor, y: Tensor, k: int, mask_x: Tensor | None = None, mask_y: Tensor | None = None) -> Tensor:
    """Central moment discrepancy as in the official code (Sec. 2.1):

    ``CMD_K(x, y) = ||E x - E y||_2 + sum_{j=2..K} ||E (x - E x)^j - E (y - E y)^j||_2``,

    moments taken elementwise over the rows (``mask_x`` / ``mask_y`` select them), without the
    ``1/|b-a|^j`` scaling of the original CMD. Zero when either side has no row. Computed in
    :func:`~mmbench.losses.compute_dtype` of the inputs (float64 stays float64).
    """
    dtype = compute_dtype(x, y)
    x, y = x.to(dtype), y.to(dtype)
    wx = torch.ones(x.shape[0], device=x.device, dtype=dtype) if mask_x is None else mask_x.to(dtype)
    wy = torch.ones(y.shape[0], device=y.device, dtype=dtype) if mask_y is None else mask_y.to(dtype)
    nx, ny = wx.sum(), wy.sum()

    def moment(t: Tensor, w: Tensor, n: Tensor) -> Tensor:
        return (t * w.unsqueeze(1)).sum(0) / n.clamp_min(1.0)

    mx, my = moment(x, wx, nx), moment(y, wy, ny)
    total = _zero_safe_norm(mx - my)
    cx, cy = x - mx, y - my
    for j in range(2, k + 1):
        total = total + _zero_safe_norm(moment(cx.pow(j), wx, nx) - moment(cy.pow(j), wy, ny))
    return total * ((nx > 0) & (ny > 0)).to(dtype)


def masked_mse(pred: Tensor, target: Tensor, cover: Tensor) -> Tensor:
    """Mean squared error over the covered ``(row, slot)`` pairs of ``B x M x d`` tensors.

    ``cover`` is ``B x M`` bool; the sum of squared errors over covered slots is divided by
    ``d * (number of covered slots)`` (``torch.nn.MSELoss`` when every slot is covered), 0 when none.
    """
    dtype = compute_dtype(pred, target)
    return masked_mean((pred.to(dtype) - target.to(dtype)).pow(2), cover)


def _mlp_classifier(in_dim: int, layers: tuple[int, ...], out_dim: int, dropout: float) -> nn.Sequential:
    """MMIN's ``FcClassifier``: (Linear -> ReLU -> Dropout) per hidden width, then a linear output."""
    parts: list[nn.Module] = []
    for width in layers:
        parts += [nn.Linear(in_dim, width), nn.ReLU()]
        if dropout > 0:
            parts.append(nn.Dropout(dropout))
        in_dim = width
    parts.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*parts)


class ResidualAE(nn.Module):
    """The cascade of ``n_blocks`` fully connected autoencoders of IF-IM (Sec. 2.2).

    Each encoder is ``dim -> layers[0] -> ... -> layers[-1]`` (LeakyReLU between, linear last layer),
    each decoder mirrors it back to ``dim`` (ReLU between, linear output); a transition MLP
    ``dim -> dim -> dim`` gives the imagined joint embedding ``E_hat``. ``forward(E, H')`` returns
    ``(E_hat, concatenated block latents)``.
    """

    def __init__(self, dim: int, layers: tuple[int, ...], n_blocks: int, cascade: str = "paper") -> None:
        super().__init__()
        self.cascade = cascade
        self.encoders = nn.ModuleList(self._encoder(dim, layers) for _ in range(n_blocks))
        self.decoders = nn.ModuleList(self._decoder(dim, layers) for _ in range(n_blocks))
        self.transition = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    @staticmethod
    def _encoder(dim: int, layers: tuple[int, ...]) -> nn.Sequential:
        parts: list[nn.Module] = []
        for width in layers:
            parts += [nn.Linear(dim, width), nn.LeakyReLU()]
            dim = width
        return nn.Sequential(*parts[:-1])

    @staticmethod
    def _decoder(dim: int, layers: tuple[int, ...]) -> nn.Sequential:
        widths = [*reversed(layers), dim]
        parts: list[nn.Module] = []
        for a, b in zip(widths[:-2], widths[1:-1], strict=True):
            parts += [nn.Linear(a, b), nn.ReLU()]
        parts.append(nn.Linear(widths[-2], widths[-1]))
        return nn.Sequential(*parts)

    def forward(self, e: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """``paper``: ``z_0 = E``, ``z_k = Dec_k(Enc_k(z_{k-1} + H'))``, ``E_hat = T(z_n)``.
        ``code``: ``x_k = E + k H'``, ``E_hat = T(x_n + Dec_n(Enc_n(x_n)))``."""
        latents = []
        if self.cascade == "paper":
            z = e
            for enc, dec in zip(self.encoders, self.decoders, strict=True):
                lat = enc(z + h)
                z = dec(lat)
                latents.append(lat)
            return self.transition(z), torch.cat(latents, dim=-1)
        x, out = e, e
        for enc, dec in zip(self.encoders, self.decoders, strict=True):
            x = x + h
            lat = enc(x)
            out = dec(lat)
            latents.append(lat)
        return self.transition(x + out), torch.cat(latents, dim=-1)


def complete_rows(batch: Batch) -> Tensor:
    """Stage-1 row filter: samples with every modality."""
    return batch.present.all(dim=1)


@register_method("ifmmin")
class IFMMIN(Method):
    """IF-MMIN (Zuo et al., ICASSP 2023): CMD-pretrained invariant encoder (Sec. 2.1), invariant-feature
    imagination cascade (Sec. 2.2) trained against a frozen stage-1 teacher (Sec. 2.3). See the module
    docstring for the adaptation to incomplete training data and the deviations from the code."""

    Config = IFMMINConfig
    cite = ("Zuo, Liu, Zhao, Gao, Li. Exploiting modality-invariant feature for robust multimodal emotion "
            "recognition with missing modalities. ICASSP 2023")

    def __init__(self, ctx: BuildContext, cfg: IFMMINConfig) -> None:
        super().__init__(ctx, cfg)
        d, n_mod = ctx.hidden, len(MODALITIES)
        self.encoders = nn.ModuleDict({m: build_encoder(m, ctx.info, ctx.encoders, d) for m in MODALITIES})
        # Inv keeps the width d: the imagination module adds H' to E (docs/methods.md#if-mmin-port)
        self.inv = nn.Sequential(nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d), nn.LeakyReLU())
        self.pretrain_classifier = _mlp_classifier(2 * n_mod * d, cfg.cls_layers, self.num_classes,
                                                   cfg.pretrain_dropout)
        self.ae = ResidualAE(n_mod * d, cfg.ae_layers, cfg.ae_blocks, cfg.cascade)
        self.classifier = _mlp_classifier(cfg.ae_blocks * cfg.ae_layers[-1], cfg.cls_layers, self.num_classes,
                                          cfg.student_dropout)
        # frozen stage-1 copy; refreshed by begin_stage("student"), always in eval mode
        self.teacher = nn.ModuleDict({"encoders": copy.deepcopy(self.encoders),
                                      "inv": copy.deepcopy(self.inv)})
        self.teacher.requires_grad_(False)
        self.stage = "student"

    # ------------------------------------------------------------------------------------ stages
    def stages(self) -> list[Stage]:
        """Stage 1 on complete rows (fails clearly below ``pretrain_min_rows``), then the student."""
        cfg: IFMMINConfig = self.cfg
        return [Stage("pretrain", epochs=cfg.pretrain_epochs, rows=complete_rows,
                      select_best=cfg.pretrain_select_best, min_rows=cfg.pretrain_min_rows),
                Stage("student", epochs=cfg.student_epochs)]

    def begin_stage(self, name: str) -> None:
        """``pretrain``: train encoders, Inv, stage-1 classifier. ``student``: freeze a teacher copy of
        the encoders and Inv, then train encoders, Inv, imagination module and student classifier."""
        if name not in ("pretrain", "student"):
            raise ValueError(f"ifmmin has stages 'pretrain' and 'student', not {name!r}")
        if name == "student":
            self.teacher["encoders"].load_state_dict(self.encoders.state_dict())
            self.teacher["inv"].load_state_dict(self.inv.state_dict())
        self.stage = name
        pretrain = name == "pretrain"
        self.pretrain_classifier.requires_grad_(pretrain)
        self.ae.requires_grad_(not pretrain)
        self.classifier.requires_grad_(not pretrain)
        self.teacher.requires_grad_(False)

    def train(self, mode: bool = True) -> IFMMIN:
        """Switch mode; the teacher always stays in eval mode (no dropout / BN updates)."""
        super().train(mode)
        self.teacher.eval()
        return self

    # ----------------------------------------------------------------------------------- forward
    def _student_view(self, present: Tensor) -> Tensor:
        """Training-time presence shown to the student: complete rows draw a pattern uniformly from
        {complete, image-only, tabular-only} (``all``) or {image-only, tabular-only} (``incomplete``);
        incomplete rows keep theirs."""
        b = present.shape[0]
        complete = present.all(dim=1)
        if self.cfg.student_patterns == "all":
            draw = torch.randint(0, 3, (b,), device=present.device)  # 0 both, 1 image-only, 2 tabular-only
        else:
            draw = torch.randint(1, 3, (b,), device=present.device)
        view = present.clone()
        view[:, TABULAR] &= ~(complete & (draw == 1))
        view[:, IMAGE] &= ~(complete & (draw == 2))
        return view

    def _embed(self, encoders: nn.ModuleDict, batch: Batch) -> Tensor:
        """``B x M x d`` pooled embeddings of the (zero-filled) inputs."""
        return torch.stack([encoders[m](batch.inputs[m])[1] for m in MODALITIES], dim=1)

    def forward(self, batch: Batch) -> Output:
        """Stage 1: classifier on ``[E; H]``. Stage 2: imagination cascade on ``(E, H')``, classifier on
        its latents. In stage-2 training the student sees the simulated presence (module docstring)."""
        present = batch.present
        if self.training and self.stage == "student":
            present = self._student_view(batch.present)
        batch = batch.with_present(present)  # zero the inputs of every absent modality (native)
        e = self._embed(self.encoders, batch)
        h = self.inv(e)
        keep = present.unsqueeze(-1).to(e.dtype)
        embeddings = {m: e[:, j] * keep[:, j] for j, m in enumerate(MODALITIES)}
        aux = {"invariant": h.flatten(1), "present_used": present}
        if self.stage == "pretrain":
            logits = self.pretrain_classifier(torch.cat([e.flatten(1), h.flatten(1)], dim=1))
        else:
            recon, latent = self.ae(e.flatten(1), h.flatten(1))
            logits = self.classifier(latent)
            aux.update(recon=recon, latent=latent)
        return Output(logits=logits, embeddings=embeddings, aux=aux)

    # ------------------------------------------------------------------------------------ losses
    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:
        """Stage 1: ``task`` (CE) + ``cmd``. Stage 2: ``task`` + ``recon`` + ``invariant`` (masked MSEs)."""
        cfg: IFMMINConfig = self.cfg
        n_mod = len(MODALITIES)
        terms = {"task": cfg.ce_weight * task_loss(out.logits, batch.y, self.task)}
        h = out.aux["invariant"].view(len(batch), n_mod, -1)
        if self.stage == "pretrain":
            terms["cmd"] = cfg.cmd_weight * cmd(h[:, IMAGE], h[:, TABULAR], cfg.cmd_moments,
                                                batch.present[:, IMAGE], batch.present[:, TABULAR])
            return terms
        true, seen = batch.present, out.aux["present_used"]
        with torch.no_grad():  # teacher embeddings of the real inputs (absent ones zeroed, then masked out)
            t_e = self._embed(self.teacher["encoders"], batch.with_present(true))
            t_h = self.teacher["inv"](t_e)
            if cfg.recon_target == "missing":
                target, cover = t_e, true & ~seen
            else:  # MMIN convention: slots the student sees regress onto Enc_T(zero input)
                zero = Batch(inputs={m: {k: torch.zeros_like(t[:1]) for k, t in d.items()}
                                     for m, d in batch.inputs.items()},
                             present=torch.zeros_like(true[:1]), y=batch.y[:1], index=batch.index[:1])
                const = self._embed(self.teacher["encoders"], zero)
                target, cover = torch.where(seen.unsqueeze(-1), const, t_e), true
        recon = out.aux["recon"].view(len(batch), n_mod, -1)
        terms["recon"] = cfg.recon_weight * masked_mse(recon, target, cover)
        terms["invariant"] = cfg.invariant_weight * masked_mse(h, t_h, true)
        return terms

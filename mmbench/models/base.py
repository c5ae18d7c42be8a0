"""The method interface every registered method implements (docs/adding.md#a-method).

A method is an ``nn.Module`` built from a :class:`BuildContext` and its typed ``Config``;
``forward(batch) -> Output`` and ``losses(batch, out) -> dict``. The loss dict holds each term
*as it enters the objective* (already multiplied by its weight); the trainer optimises their sum,
and records log every term. The native classification term is named ``"task"`` so a head (DPL)
can replace it. Terms that involve an absent modality are masked per row (``losses.masked_mean``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from ..data.base import DataInfo
from ..data.batch import MODALITIES, Batch, Output
from ..encoders.config import EncodersConfig
from .params import NoConfig


@dataclass(frozen=True)
class BuildContext:
    """What a method needs to know about the data to build itself."""

    info: DataInfo
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    hidden: int = 64


@dataclass(frozen=True)
class Stage:
    """One training stage. Most methods have one; IF-MMIN has two (pretrain, then student).

    The stage's trainer settings are the run's ``train`` with ``train.stages[name]`` on top (its epochs
    are set there by the regime: a share of the run's budget under ``fair``, the published epochs under
    ``paper``; docs/training.md). A multi-stage method names its stages in its config class's
    ``STAGES`` so that configs can be checked without building the model.

    Attributes:
        name: stage name, passed to :meth:`Method.begin_stage`.
        epochs: epochs when ``train.stages`` does not set them; ``None`` = the run's ``train.epochs``.
            (Built-in methods leave it ``None``: stage epochs belong to the trainer settings.)
        rows: optional filter ``batch -> bool mask`` of the training rows this stage uses
            (e.g. complete samples only); rows outside it are dropped from each batch.
        select_best: early-stop on, and restore the best validation epoch of, this stage.
        min_rows: the stage fails clearly if fewer training rows than this pass ``rows``.
        predicts: whether this stage's weights can be the run's final weights (with
            ``train.stage_selection: all`` the best validation epoch over every such stage is kept).
        why_not: when ``predicts`` is False, why (stored in the record's ``selection``).
    """

    name: str = "main"
    epochs: int | None = None
    rows: Callable[[Batch], Tensor] | None = None
    select_best: bool = True
    min_rows: int = 1
    predicts: bool = True
    why_not: str = ""


class Method(nn.Module):
    """Base class of registered methods."""

    Config: type = NoConfig
    #: behaviour version, hashed into every run id: bump it when a change alters what the method computes
    version: ClassVar[int] = 1
    #: modality slots the method can take
    modalities: tuple[str, ...] = MODALITIES
    #: whether a non-native head (``--head dpl``) may replace the method's classifier
    supports_heads: bool = True
    #: one-line citation shown by ``mmbench ls methods``
    cite: str = ""

    def __init__(self, ctx: BuildContext, cfg: object) -> None:
        super().__init__()
        self.ctx = ctx
        self.cfg = cfg
        self.task = ctx.info.task
        self.num_classes = ctx.info.num_classes

    def forward(self, batch: Batch) -> Output:  # pragma: no cover - interface
        """Logits, per-modality pooled embeddings and named auxiliaries for ``batch``."""
        raise NotImplementedError

    def losses(self, batch: Batch, out: Output) -> dict[str, Tensor]:  # pragma: no cover - interface
        """Named, weighted loss terms; must include ``"task"``."""
        raise NotImplementedError

    def embed_dims(self) -> dict[str, int]:
        """Width of ``Output.embeddings[m]`` per modality (heads are built from it)."""
        return {m: self.ctx.hidden for m in self.modalities}

    def stages(self) -> list[Stage]:
        """Training stages in order. The weights tested are the best validation epoch over every stage
        that ``predicts`` (``train.stage_selection: all``) or of the last stage (``last``)."""
        return [Stage("main")]

    def begin_stage(self, name: str) -> None:
        """Hook called before each stage (freeze/unfreeze parts, copy a teacher, ...)."""

    def select_stage(self, name: str) -> None:
        """Hook called after training when the weights kept for testing come from stage ``name`` (not the
        last): switch to predicting as in that stage (e.g. IF-MMIN's stage-1 classifier)."""

    def begin_epoch(self, epoch: int) -> None:
        """Hook called at the start of every training epoch (0-based, counted across stages)."""

    def probe_features(self, out: Output) -> dict[str, Tensor]:
        """Named feature groups the ground-truth probes read (:mod:`mmbench.probes`): ``<modality>`` or
        ``<modality>.<branch>`` -> ``B x D``. Default: the pooled embedding of each modality; methods
        with shared and specific branches name both (``image.shared``, ``image.specific``)."""
        return {m: out.embeddings[m] for m in self.modalities if m in out.embeddings}

    def diagnostics(self, batch: Batch, out: Output) -> dict[str, float]:
        """Named scalar health checks of one forward pass (``mmbench.diagnostics``); none by default."""
        return {}

"""Training balancers: wrap the training step, may add terms and forward on modality subsets.

A balancer sees the method only through the pipeline, the presence mask and ``Output.embeddings``;
to forward with modalities dropped it calls ``pipeline(batch.with_present(mask))``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

from ..data.batch import Batch, Output
from ..models.base import BuildContext, NoConfig

if TYPE_CHECKING:
    from ..pipeline import Pipeline
    from ..train import Loader


class Balancer(nn.Module):
    """Base class of registered balancers (its parameters are optimised with the method's)."""

    Config: type = NoConfig
    #: behaviour version, hashed into every run id: bump it when a change alters what it computes
    version: ClassVar[int] = 1
    cite: str = ""

    def __init__(self, ctx: BuildContext, embed_dims: dict[str, int], cfg: object) -> None:
        super().__init__()
        self.ctx = ctx
        self.embed_dims = embed_dims
        self.cfg = cfg

    def setup(self, pipeline: Pipeline, loaders: dict[str, Loader]) -> None:
        """Called once before training (dataset-level statistics, reference predictors, ...)."""

    def begin_epoch(self, epoch: int) -> None:
        """Hook called at the start of every training epoch (0-based, counted across stages)."""

    def train_batch(self, batch: Batch) -> Batch:
        """The batch a training step uses, before the forward (default: unchanged). Only training
        batches pass through it; validation and test batches keep the protocol's masks."""
        return batch

    def losses(self, pipeline: Pipeline, batch: Batch, out: Output,
               terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """Return the (re-weighted / extended) loss terms of one training step."""
        return terms

"""Encoders as ``stem -> stages -> finish``, so a shared/specific pair can run its shared lower part once.

Every registered encoder is a :class:`StagedEncoder`: ``forward(inputs)`` is
``finish(stage(n - 1, ... stage(0, stem(inputs))))``. The *stem* (a CNN's first convolution, a
table's column tokenizer, an EHR embedding) and the *stages* (ResNet stages, transformer layers) are
named by their dotted module paths, so :class:`~mmbench.encoders.build.SharedSpecific` can tie the
lower ones between two copies and compute them once. ``finish`` (projection, final norm, pooling)
always belongs to one copy.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class StagedEncoder(nn.Module):
    """Base class: subclasses set :attr:`stem_names` / :attr:`stage_names` and implement the three parts."""

    #: dotted names of the modules / parameters that make up the stem (always shared by a pair)
    stem_names: tuple[str, ...] = ()
    #: dotted names of the stages, bottom to top; ``stage(i, state)`` runs ``stage_names[i]``
    stage_names: tuple[str, ...] = ()
    #: stages below this one are frozen and computed outside (frozen-encoder mode): the stem then
    #: reads their cached output (:meth:`mmbench.encoders.image.ImageEncoder.freeze_below`)
    first_stage: int = 0

    def stem(self, inputs: dict[str, Tensor]) -> Any:
        """The input part: raw inputs -> the state the first stage reads."""
        raise NotImplementedError

    def stage(self, i: int, state: Any) -> Any:
        """Stage ``i``; by default the module ``stage_names[i]`` applied to the state."""
        return self.get_submodule(self.stage_names[i])(state)

    def finish(self, state: Any) -> tuple[Tensor, Tensor]:
        """The last stage's state -> (tokens ``B x L x D``, pooled ``B x D``)."""
        raise NotImplementedError

    def forward(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Encode ``inputs``: (tokens ``B x L x D``, pooled ``B x D``)."""
        state = self.stem(inputs)
        for i in range(self.first_stage, len(self.stage_names)):
            state = self.stage(i, state)
        return self.finish(state)

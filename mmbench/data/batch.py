"""The batch and output containers shared by data, methods, heads and balancers.

Contract (docs/adding.md#contracts): absent inputs never reach a model. ``Batch.inputs[m]`` holds the tensors of
modality ``m`` with every row where ``m`` is absent set to zero, and ``present[:, j]`` says which
rows have modality ``MODALITIES[j]``. ``Batch.drop`` re-applies that rule when a balancer forces
extra modalities absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..core import IMAGE, MODALITIES, PATTERNS, TABULAR

__all__ = ["IMAGE", "MODALITIES", "PATTERNS", "TABULAR", "Batch", "Output", "pattern_masks", "zero_absent"]



def pattern_masks(present: Tensor) -> dict[str, Tensor]:
    """Boolean row masks for each named pattern of a ``B x M`` presence matrix."""
    out = {}
    for name, row in PATTERNS.items():
        target = torch.tensor(row, dtype=torch.bool, device=present.device)
        out[name] = (present == target).all(dim=1)
    return out


def zero_absent(inputs: dict[str, dict[str, Tensor]], present: Tensor) -> dict[str, dict[str, Tensor]]:
    """Return inputs with every tensor of an absent modality zeroed on the absent rows."""
    out: dict[str, dict[str, Tensor]] = {}
    for j, mod in enumerate(MODALITIES):
        if mod not in inputs:
            continue
        keep = present[:, j]
        parts = {}
        for key, t in inputs[mod].items():
            shape = (-1,) + (1,) * (t.dim() - 1)
            parts[key] = t * keep.view(shape).to(t.dtype)
        out[mod] = parts
    return out


@dataclass
class Batch:
    """One mini-batch.

    Attributes:
        inputs: modality -> named tensors (e.g. ``{"image": {"pixels": B x C x H x W},
            "tabular": {"cat": B x Kc long, "num": B x Kn float}}``), zero where absent.
        present: ``B x M`` bool, column order :data:`MODALITIES`.
        y: labels, ``B`` long (multi-class/binary) or ``B x C`` float (multi-label).
        index: ``B`` long, row index of each sample in its split (for predictions files).
    """

    inputs: dict[str, dict[str, Tensor]]
    present: Tensor
    y: Tensor
    index: Tensor

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every tensor to ``device``."""
        return Batch(
            inputs={m: {k: t.to(device, non_blocking=non_blocking) for k, t in d.items()}
                    for m, d in self.inputs.items()},
            present=self.present.to(device, non_blocking=non_blocking),
            y=self.y.to(device, non_blocking=non_blocking),
            index=self.index.to(device, non_blocking=non_blocking),
        )

    def with_present(self, present: Tensor) -> Batch:
        """A view of this batch with a *subset* of the modalities present (never adds one back).

        Balancers use it to forward a method on modality subsets (MCE); newly absent inputs are
        zeroed so the leakage contract holds.
        """
        present = present.to(torch.bool) & self.present
        return replace(self, inputs=zero_absent(self.inputs, present), present=present)

    def select(self, rows: Tensor) -> Batch:
        """The rows ``rows`` (bool mask or indices) of this batch."""
        return Batch(
            inputs={m: {k: t[rows] for k, t in d.items()} for m, d in self.inputs.items()},
            present=self.present[rows], y=self.y[rows], index=self.index[rows],
        )


@dataclass
class Output:
    """What a method returns from ``forward``.

    Attributes:
        logits: ``B x C`` class scores (before softmax/sigmoid).
        embeddings: modality -> ``B x D`` pooled embedding (zero rows where absent); heads (DPL)
            and balancers (MCE) use these without knowing the method's internals.
        aux: named tensors a method needs in ``losses`` or wants to expose (attention maps, ...).
    """

    logits: Tensor
    embeddings: dict[str, Tensor] = field(default_factory=dict)
    aux: dict[str, Tensor] = field(default_factory=dict)

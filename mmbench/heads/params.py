"""Hyper-parameters of the built-in output heads, torch-free (see :mod:`mmbench.models.params`)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field

from ..typed import Bool, Float, NonNegFloat, PosFloat, config

#: An additive angular margin in radians, in [0, pi/2).
Margin = Annotated[Float, Field(ge=0, lt=math.pi / 2)]


@config
class DPLConfig:
    """Hyper-parameters of the DPL head (defaults: official MM-IMDb `both` script, paper Sec. 3).

    Attributes:
        s_complete, s_image_only, s_tabular_only: ArcFace scale s per missing case (Eq. 9).
        m_complete, m_image_only, m_tabular_only: additive angular margin m per case, radians (Eq. 9).
        supcon_weight: lambda of Eq. 13; 0 trains with ArcFace only (the paper's Table 2 ablation).
        temperature: tau of Eq. 12.
        base_temperature: SupCon's output scale tau / base_tau (Khosla et al.; 1 in the DPL scripts).
        supcon_reduction: ``mean`` = Khosla et al.'s normalisation used by the official code (mean
            over positives, then over anchors, times tau / base_tau); ``sum`` = Eq. 12 as printed.
        decomposed: False = the paper's Table 3 "un-decomp." ablation: one prototype per case over
            the concatenated embedding, cosine of the whole vector (official ``DecoupledType3``).
        multilabel_reduction: multi-label ArcFace (Eq. 10) averaged over labels (``mean``, the
            official code's ``binary_cross_entropy_with_logits``) or summed as printed (``sum``).
    """

    s_complete: PosFloat = 32.0
    s_image_only: PosFloat = 32.0
    s_tabular_only: PosFloat = 32.0
    m_complete: Margin = 0.10
    m_image_only: Margin = 0.15
    m_tabular_only: Margin = 0.15
    supcon_weight: NonNegFloat = 0.9
    temperature: PosFloat = 1.0
    base_temperature: PosFloat = 1.0
    supcon_reduction: Literal["mean", "sum"] = "mean"
    decomposed: Bool = True
    multilabel_reduction: Literal["mean", "sum"] = "mean"

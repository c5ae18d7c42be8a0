"""Hyper-parameters of the built-in methods: one typed config per method, torch-free.

Each config is validated when a method YAML (``methods/<name>.yaml``: ``params:``) or a ``--set
params.X=...`` is read, so ``mmbench validate`` checks every shipped YAML without importing torch.
The method implementations (``mmbench/models/<name>.py``) import their config from here. The
defaults here and the values in the method's YAML are one source of truth: a test checks that they
agree wherever the YAML sets a value.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from ..errors import ConfigError
from ..typed import Bool, Float, Fraction, NonNegFloat, NonNegInt, PosFloat, PosInt, config

#: ``separate_stages`` of a shared/specific encoder pair: a number of top stages, or "all".
Separate = PosInt | Literal["all"]
Dropout = Annotated[Float, Field(ge=0, lt=1)]

#: Rows of H (DFPL Eq. 10) per scale (Table V: CMA global / prototype / multi-scale).
SCALE_ROWS: dict[str, tuple[int, ...]] = {"global": (0, 2, 4), "prototype": (1, 3, 5),
                                          "multi": (0, 1, 2, 3, 4, 5)}


@config
class NoConfig:
    """A method (or head, balancer) without hyper-parameters."""


@config
class LateFusionConfig:
    """Hyper-parameters of late fusion."""

    dropout: Dropout = 0.1


@config
class DrFuseConfig:
    """Loss weights and the choices left open when porting DrFuse to image + tabular / multi-class.

    Attributes:
        lambda_pred_shared, lambda_pred_image, lambda_pred_tabular: auxiliary prediction losses of the
            pooled-shared, image-distinct and tabular-distinct heads (paper 0.5; official code 1.0).
        lambda_jsd: weight of the JSD alignment of the two shared features.
        lambda_cos_image, lambda_cos_tabular: weights of ``|cos(g(h_sh), h_ds)|`` per modality.
        lambda_rank: weight of the attention ranking loss (paper 0.5; official code 1.0).
        rank_target: multi-class only: how each branch's per-class loss (which decides the ranking
            targets) is measured: ``"ovr"`` = one-vs-rest BCE of the branch's softmax probability of
            each class (class-dependent, the analogue of the paper's per-label BCE); ``"ce"`` = the
            branch's per-sample CE, the same for every class. Multi-label always uses per-label BCE.
        jsd_rows: ``"complete"`` (default) = JSD averaged over rows where both modalities are
            present; ``"all"`` = the official code: numerator summed over every row with any modality
            (an absent modality enters through its zero-input features), divided by the complete count,
            clamped at 1 when a batch has no complete row (the official code divides by 1e-6 there).
        separate_stages: how many top encoder stages the shared and the distinct encoder of a
            modality do *not* share (``"all"``: only the stem is shared, as the official code).
    """

    lambda_pred_shared: NonNegFloat = 0.5
    lambda_pred_image: NonNegFloat = 0.5
    lambda_pred_tabular: NonNegFloat = 0.5
    lambda_jsd: NonNegFloat = 1.0
    lambda_cos_image: NonNegFloat = 1.0
    lambda_cos_tabular: NonNegFloat = 1.0
    lambda_rank: NonNegFloat = 0.5
    rank_target: Literal["ovr", "ce"] = "ovr"
    jsd_rows: Literal["complete", "all"] = "complete"
    separate_stages: Separate = "all"


@config
class ShaSpecConfig:
    """Hyper-parameters of ShaSpec.

    Attributes:
        alpha: weight of the distribution-alignment objective (paper / official code 0.1).
        beta: weight of the domain-classification objective (paper / official code 0.02).
        dao: distance of DAO: ``"l1"`` (official code, mean absolute difference) or ``"mse"`` (the
            third-party classification re-implementation).
        aux_on_absent: ``False`` (default): DAO only on rows with both modalities, DCO only on present
            modalities. ``True`` = the official code: both computed on every row, an absent modality
            entering through the features of its zero-filled input.
        trunk_depth: transformer layers of the shared trunk (and of each specific trunk).
        trunk_heads: attention heads of the trunks (must divide ``hidden``).
        share_stem: the shared and specific paths of a modality reuse one stem.
        dropout: dropout before the classifier and inside the trunks.
    """

    alpha: NonNegFloat = 0.1
    beta: NonNegFloat = 0.02
    dao: Literal["l1", "mse"] = "l1"
    aux_on_absent: Bool = False
    trunk_depth: PosInt = 1
    trunk_heads: PosInt = 4
    share_stem: Bool = False
    dropout: Dropout = 0.0


@config
class IFMMINConfig:
    """Hyper-parameters of IF-MMIN (defaults: the official IEMOCAP scripts).

    The two stages (``STAGES``) and their epochs are trainer settings (``train.stages``): under
    ``--regime fair`` they split ``train.epochs`` by the shares of ``methods/ifmmin.yaml`` ``fair:``
    (1/3 + 2/3, the published 20 + 40); under ``--regime paper`` they are the published 20 and 40.

    Attributes:
        pretrain_min_rows: stage 1 fails clearly if fewer complete training rows exist.
        pretrain_select_best: restore the best validation epoch of stage 1 as the teacher (the official
            code keeps the best-validation checkpoint of the pretrained model).
        cmd_moments: K of the CMD (central moments 2..K plus the means).
        cmd_weight: weight of the CMD term in stage 1.
        ce_weight: weight of the classification term (both stages).
        recon_weight: weight of the reconstruction MSE (stage 2).
        invariant_weight: weight of the invariant MSE (stage 2; the script's ``consistent_weight=100`` is
            never read by the model, so the effective weight is 1).
        ae_layers: encoder widths of each autoencoder block (decoder mirrors them).
        ae_blocks: number of cascaded autoencoder blocks.
        cascade: ``paper`` (block input = previous block output + H'; also the official ResidualAE at
            HEAD f4d65fc4) or ``code`` (the official ResidualAE as first published, commit a4b6ef40).
        cls_layers: hidden widths of both classifiers.
        pretrain_dropout: dropout of the stage-1 classifier.
        student_dropout: dropout of the student classifier.
        student_patterns: patterns a complete training row is shown as in stage 2 (``all`` or
            ``incomplete``, the official code).
        recon_target: ``missing`` (only missing slots) or ``code`` (MMIN convention, see the module doc).
    """

    STAGES: ClassVar[tuple[str, ...]] = ("pretrain", "student")

    pretrain_min_rows: Annotated[int, Field(ge=2, strict=True)] = 32
    pretrain_select_best: Bool = True
    cmd_moments: PosInt = 5
    cmd_weight: NonNegFloat = 1.0
    ce_weight: NonNegFloat = 1.0
    recon_weight: NonNegFloat = 1.0
    invariant_weight: NonNegFloat = 1.0
    ae_layers: Annotated[tuple[PosInt, ...], Field(min_length=1)] = (256, 128, 64)
    ae_blocks: PosInt = 5
    cascade: Literal["paper", "code"] = "paper"
    cls_layers: tuple[PosInt, ...] = (128, 128)
    pretrain_dropout: Dropout = 0.3
    student_dropout: Dropout = 0.5
    student_patterns: Literal["all", "incomplete"] = "all"
    recon_target: Literal["missing", "code"] = "missing"


@config
class DMRNetConfig:
    """Hyper-parameters of DMRNet (defaults: the official audio-visual code).

    Attributes:
        kl_weight: alpha, weight of the KL term.
        hcr_weight: beta, weight of the hard-combination regularizer (argparse default 0.5; the
            CREMA-D script's best 0.2, tuned under the broadcasting bug).
        hcr_warmup_epochs: epochs that accumulate the variance statistics before the hard
            combination is chosen (the code: epochs 0..5, i.e. 6).
        hcr_mode: ``fixed`` (per-sample, as described) or ``code`` (the official broadcasting).
        modality_dropout: draw a random modality combination per complete training row.
    """

    kl_weight: NonNegFloat = 1e-3
    hcr_weight: NonNegFloat = 0.2
    hcr_warmup_epochs: NonNegInt = 6
    hcr_mode: Literal["fixed", "code"] = "fixed"
    modality_dropout: Bool = True


@config
class DFPLConfig:
    """Hyper-parameters of DFPL (paper defaults; Section IV) and the switches of its ablations.

    Attributes:
        alpha, beta, gamma: loss weights of Eq. 13 (L_cssm; L_div + L_pdis; L_pfa).
        delta: similarity margin of the diversity loss (Eq. 3).
        omega: weight of the specific-prototype OT term, ``L_pali = L_pali^shared + omega L_pali^spec``
            (the paper calls it "a small weighting factor" without a value; 0.1 is our choice).
        num_prototypes: K prototypes per branch (Table III: 3, 5, 10, 15).
        ot_epsilon: entropic regularisation of Eq. 5.
        ot_cost: the unit of Eq. 4's cost in Eq. 5. ``relative`` (default): the squared distances of
            Eq. 4 divided by their mean over the K x K pairs of the problem, so eps = 0.1 is relative
            to the typical distance and the OT term is scale-free; ``sqeuclidean``: raw squared
            distances (``dfpl-literal``; with D = 64-512 they are in the hundreds, the plan is a
            permutation and the term dominates training); ``normalized``: of L2-normalised
            prototypes (``2 - 2 cos``; ``dfpl-normcost``, changes the geometry of Eq. 4).
        sinkhorn_max_iter, sinkhorn_tol, sinkhorn_scaling: POT's batched log-domain Sinkhorn with
            epsilon-scaling (:func:`~mmbench.models.dfpl_parts.sinkhorn_plan`; scaling 0 = plain).
        ffn_mult: hidden width of the TPE's FFN (Eq. 2) as a multiple of D (not given in the paper).
        query_init: initial TPE queries F of Eq. 2 (not given in the paper): ``unit`` (default)
            ``N(0, 1/D)``, norm about 1 like the attention output, so prototypes start input-dependent;
            ``normal``: ``N(0, 1)`` (``dfpl-literal``), norm sqrt(D), which dominates Eq. 2's residual.
        jsd: how features become distributions for the JSD of Eq. 1 (``softmax`` over D, or
            ``sigmoid`` per dimension as DrFuse's code).
        pdis_jsd: also add the JSD alignment term of Eq. 1 to L_pdis (the text says "the same loss
            as Eq. 1"; Fig. 2 names only the per-modality disentanglement L_pdis^m, our default).
        sspm, diversity: Table II SSPM on/off; Table III L_div on/off.
        pfa, pali, cali: Table II PFA on/off; Table IV L_pali / L_cali (each needs ``pfa``).
        class_prototype: Table IV class prototypes ``gated`` (Eq. 7) / ``global`` / ``prototype``.
        fusion: Table V ``cma`` / ``concat`` / ``add`` (Table II "CMA off" = ``concat``).
        scale: Table V rows of H used by the fusion: ``multi`` (Eq. 10) / ``global`` / ``prototype``.
        separate_stages: how many top encoder stages the shared and the specific encoder of a
            modality do *not* share (the paper: "share lower-layer parameters ... separate higher
            layers", without saying where; 1 = the last ResNet stage / transformer layer, our
            default; ``"all"`` = the stem only, as DrFuse's code).
    """

    alpha: NonNegFloat = 1.0
    beta: NonNegFloat = 0.1
    gamma: NonNegFloat = 0.1
    delta: Fraction = 0.2
    omega: NonNegFloat = 0.1
    num_prototypes: PosInt = 5
    ot_epsilon: PosFloat = 0.1
    ot_cost: Literal["relative", "sqeuclidean", "normalized"] = "relative"
    sinkhorn_max_iter: PosInt = 50
    sinkhorn_tol: PosFloat = 1e-4
    sinkhorn_scaling: Annotated[Float, Field(ge=0, lt=1)] = 0.5
    ffn_mult: PosFloat = 4.0
    query_init: Literal["unit", "normal"] = "unit"
    jsd: Literal["softmax", "sigmoid"] = "softmax"
    pdis_jsd: Bool = False
    sspm: Bool = True
    diversity: Bool = True
    pfa: Bool = True
    pali: Bool = True
    cali: Bool = True
    class_prototype: Literal["gated", "global", "prototype"] = "gated"
    fusion: Literal["cma", "concat", "add"] = "cma"
    scale: Literal["multi", "global", "prototype"] = "multi"
    separate_stages: Separate = 1

    def __post_init__(self) -> None:
        if self.pfa and not self.sspm:
            raise ConfigError("pfa needs the prototypes of sspm: set pfa=false when sspm=false")
        if self.scale == "prototype" and not self.sspm:
            raise ConfigError("scale='prototype' needs the prototypes of sspm")

    def rows(self) -> tuple[int, ...]:
        """Rows of H (Eq. 10) the fusion uses: the scale's rows, global only without SSPM."""
        return SCALE_ROWS[self.scale if self.sspm else "global"]

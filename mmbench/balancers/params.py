"""Hyper-parameters of the built-in training balancers, torch-free (see :mod:`mmbench.models.params`)."""

from __future__ import annotations

from typing import Literal

from ..errors import ConfigError
from ..typed import Bool, NonNegFloat, NonNegInt, config


@config
class MCEConfig:
    """Hyper-parameters of MCE (defaults: the official IEMOCAP script; see docs/methods.md#mce).

    Attributes:
        w_rec, w_sep, w_sub: weights of cross-modal completion, unimodal and subset-prediction terms.
        use_a: scale each modality's terms by the dataset-level factor a_m.
        use_b: scale them by the batch-level Shapley factor b_m (needs the reference predictors).
        shapley: ``textbook`` Shapley formula, or the official code's variant (marginals taken against
            the singleton; docs/methods.md#mce-shapley-variants) with the normaliser L of its IEMOCAP script
            (``mce_official``: L = modalities present in the batch, so two modalities get the same
            phi = v(12)/2) or of its AV-MNIST script (``mce_avmnist``: L = 2^M - 1 = 3 for two
            modalities, phi_m = (v(12) + v(m)) / 6).
        ref_epochs: epochs of the reference-predictor stage run in ``setup`` (first stage of the run).
        ref_lr: Adam learning rate of that stage.
        cache_reference: score the frozen reference predictors once on the training split after their
            stage and look the per-row correctness up by row index (exact for datasets without random
            augmentation); False re-runs them on every batch, as the official code does.
        detach_rec_target: stop the gradient through the full-input target of the completion L1
            (the official code does not: False).
        max_subset_rows: 0 (default) enumerates every (row, subset) pair exactly, as the paper does;
            n > 0 caps the extra forward at n pairs drawn uniformly per step, each weighted by
            (pairs / n) in L_sub, L_rec and v(S) (unbiased; bounds the step cost when most rows are
            complete).
        train_masks: ``protocol`` (default): training batches keep the protocol's presence mask
            (static; in the ``imbalanced`` scenario no row loses both modalities). ``per_epoch``: the
            official code's behaviour: at every epoch each modality is dropped, independently of the
            other, from as many training rows as the protocol drops it from (the rows are redrawn,
            so a row may lose both and is then left out of that epoch, and over the epochs the model
            sees inputs the protocol hides); naturally missing inputs stay missing. Validation and
            test masks are always the protocol's.
    """

    w_rec: NonNegFloat = 1.0
    w_sep: NonNegFloat = 1.0
    w_sub: NonNegFloat = 2.0
    use_a: Bool = True
    use_b: Bool = True
    shapley: Literal["textbook", "mce_official", "mce_avmnist"] = "textbook"
    ref_epochs: NonNegInt = 5
    ref_lr: NonNegFloat = 1e-3
    cache_reference: Bool = True
    detach_rec_target: Bool = False
    max_subset_rows: NonNegInt = 0
    train_masks: Literal["protocol", "per_epoch"] = "protocol"

    def __post_init__(self) -> None:
        if self.ref_epochs < 1 and self.use_b:
            raise ConfigError("use_b needs trained reference predictors: ref_epochs must be >= 1")

"""Options of the structured synthetic suite's adapters (torch-free), and their lazy registration.

One adapter per task (``suite-parts``, ``suite-predict``, ``suite-imbalance``, ``suite-reliance``,
``suite-interaction``, ``suite-shared``); each task's options are the common :class:`SuiteOptions` plus
the knobs of its structure. The generative models are documented in ``docs/synthetic-suite.md`` and
:mod:`mmbench.data.suite_tasks`.

``seed`` is the data seed. ``seed: run`` (what the suite's cards use) means "the run's seed", so that
seeds redraw data, masks and initialisation together; the spec builder replaces it with the run's seed
through :func:`bind_run_seed` before the adapter is built. An adapter given an unbound ``run`` raises a
one-line :class:`~mmbench.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import Field

from ..errors import ConfigError
from ..registry import DATASETS
from ..typed import Fraction, NonNegInt, config

Count = Annotated[int, Field(ge=10, le=200_000, strict=True)]
Classes = Annotated[int, Field(ge=2, le=16, strict=True)]
Grid = Annotated[int, Field(ge=2, le=8, strict=True)]
PixelNoise = Annotated[float, Field(ge=0.0, le=0.05)]
#: noise of a partner (confusion) channel: beyond 0.5 the partner would be the likelier value
PartnerNoise = Annotated[float, Field(ge=0.0, le=0.5)]
PartnerClasses = Annotated[int, Field(ge=3, le=16, strict=True)]


def check_noise(name: str, noise: float, arity: int) -> None:
    """A symmetric channel over ``arity`` values is pure noise at ``(arity-1)/arity``; more is an error."""
    top = (arity - 1) / arity
    if noise > top + 1e-12:
        raise ConfigError(f"{name} must be <= {top:.4g} (pure noise for {arity} values), got {noise}")


@config
class SuiteOptions:
    """Options every task of the suite shares: sizes, data seed, image grid, nuisance columns.

    The image is ``grid x grid`` cells of 8 px (``8 * grid`` px square); each cell holds at most one
    glyph. ``pixel_noise`` (std on the [0, 1] scale) is capped at 0.05 so that glyphs stay exactly
    decodable (the posteriors condition on the glyphs).
    """

    seed: NonNegInt | Literal["run"] = 0
    n_train: Count = 2000
    n_val: Count = 1000
    n_test: Count = 20000
    grid: Grid = 4
    pixel_noise: PixelNoise = 0.03
    n_nuisance_num: Annotated[int, Field(ge=0, le=16, strict=True)] = 2
    n_nuisance_cat: Annotated[int, Field(ge=0, le=8, strict=True)] = 1

    def check_cells(self, needed: int) -> None:
        """The grid must have room for ``needed`` glyph cells."""
        if needed > self.grid**2:
            raise ConfigError(f"the task draws {needed} glyph cells but grid {self.grid} has {self.grid**2}; "
                              "raise grid or lower the part counts")


@config
class PartsOptions(SuiteOptions):
    """``suite-parts``: the class glyph is the one framed cell among ``n_distractors`` unframed glyphs
    (confused with class ``y+1`` w.p. ``noise_image``); a table column reads the class (confused with
    ``y+2`` w.p. ``noise_tabular``)."""

    n_classes: PartnerClasses = 8
    n_distractors: Annotated[int, Field(ge=0, le=63, strict=True)] = 9
    noise_image: PartnerNoise = 0.1
    noise_tabular: PartnerNoise = 0.3

    def __post_init__(self) -> None:
        self.check_cells(1 + self.n_distractors)


@config
class PredictOptions(SuiteOptions):
    """``suite-predict``: class = (image factor a, table factor b), with ``b = a`` w.p. ``coupling``."""

    n_values: Annotated[int, Field(ge=2, le=6, strict=True)] = 4
    coupling: Fraction = 0.8
    noise_image: Fraction = 0.05
    noise_tabular: Fraction = 0.05

    def __post_init__(self) -> None:
        check_noise("noise_image", self.noise_image, self.n_values)
        check_noise("noise_tabular", self.noise_tabular, self.n_values)


@config
class ImbalanceOptions(SuiteOptions):
    """``suite-imbalance``: both modalities show the class through confusion channels of different noise
    (the image confuses ``y`` with ``y+1`` w.p. ``noise_image``, the table with ``y+2`` w.p.
    ``noise_tabular``)."""

    n_classes: PartnerClasses = 8
    noise_image: PartnerNoise = 0.3
    noise_tabular: PartnerNoise = 0.05


@config
class RelianceOptions(SuiteOptions):
    """``suite-reliance``: per row one modality (the decider) reads the class and the other shows a random
    class; the first half of the classes is decided by the image w.p. ``reliance_image``, the second half
    by the table w.p. ``reliance_tabular``."""

    n_classes: Classes = 8
    reliance_image: Annotated[float, Field(ge=0.5, le=1.0)] = 0.9
    reliance_tabular: Annotated[float, Field(ge=0.5, le=1.0)] = 0.8
    noise: Fraction = 0.05

    def __post_init__(self) -> None:
        if self.n_classes % 2:
            raise ConfigError(f"n_classes must be even (half image classes, half table classes), got {self.n_classes}")
        check_noise("noise", self.noise, self.n_classes)


@config
class InteractionOptions(SuiteOptions):
    """``suite-interaction``: the class is a tuple of ``arity``-ary components: ``redundant`` ones seen by
    both modalities, ``unique_image`` / ``unique_tabular`` ones seen by one, and ``synergy`` ones equal to
    ``(x_image + x_table) mod arity`` (XOR for arity 2). Image readings have noise ``noise_image``, table
    readings ``noise_tabular`` (different, so that the two readings of a redundant component never tie)."""

    arity: Annotated[int, Field(ge=2, le=4, strict=True)] = 2
    redundant: Annotated[int, Field(ge=0, le=3, strict=True)] = 1
    unique_image: Annotated[int, Field(ge=0, le=3, strict=True)] = 1
    unique_tabular: Annotated[int, Field(ge=0, le=3, strict=True)] = 1
    synergy: Annotated[int, Field(ge=0, le=3, strict=True)] = 1
    noise_image: Fraction = 0.03
    noise_tabular: Fraction = 0.06

    def __post_init__(self) -> None:
        parts = self.redundant + self.unique_image + self.unique_tabular + self.synergy
        if parts == 0 or self.arity**parts > 64:
            raise ConfigError(f"the class has arity**(redundant+unique_image+unique_tabular+synergy) = "
                              f"{self.arity}**{parts} values; expected 2..64")
        check_noise("noise_image", self.noise_image, self.arity)
        check_noise("noise_tabular", self.noise_tabular, self.arity)
        self.check_cells(self.redundant + self.unique_image + self.synergy)


@config
class SharedOptions(SuiteOptions):
    """``suite-shared``: the class is shown by ``n_copies`` independent noisy image glyphs and one
    noisy table column (many image tokens, one table token: no one-to-one counterpart)."""

    n_classes: Classes = 8
    n_copies: Annotated[int, Field(ge=1, le=16, strict=True)] = 4
    noise_image: Fraction = 0.5
    noise_tabular: Fraction = 0.3

    def __post_init__(self) -> None:
        check_noise("noise_image", self.noise_image, self.n_classes)
        check_noise("noise_tabular", self.noise_tabular, self.n_classes)
        self.check_cells(self.n_copies)


#: adapter name -> (options class, implementation class path)
SUITE_ADAPTERS: dict[str, tuple[type, str]] = {
    "suite-parts": (PartsOptions, "mmbench.data.suite:PartsDataset"),
    "suite-predict": (PredictOptions, "mmbench.data.suite:PredictDataset"),
    "suite-imbalance": (ImbalanceOptions, "mmbench.data.suite:ImbalanceDataset"),
    "suite-reliance": (RelianceOptions, "mmbench.data.suite:RelianceDataset"),
    "suite-interaction": (InteractionOptions, "mmbench.data.suite:InteractionDataset"),
    "suite-shared": (SharedOptions, "mmbench.data.suite:SharedDataset"),
}


def bind_run_seed(options: Any, run_seed: int) -> Any:
    """``options`` with ``seed: run`` replaced by ``run_seed`` (unchanged when the seed is a number or the
    options have no seed). The spec builder calls this so the resolved spec records the data seed."""
    if getattr(options, "seed", None) != "run":
        return options
    return dataclasses.replace(options, seed=int(run_seed))


def register() -> None:
    """Register every suite adapter lazily with its torch-free options (runs when this module is imported)."""
    for name, (options, target) in SUITE_ADAPTERS.items():
        DATASETS.lazy(name, target, options)


register()

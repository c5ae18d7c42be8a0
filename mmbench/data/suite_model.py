"""Discrete latent models with exact Bayes posteriors: the engine of the structured synthetic suite.

A task of the suite (see ``docs/synthetic-suite.md``) is a finite latent space ``u = 1..U`` with a prior
``p(u)``, a class ``y(u)``, and *readings*: discrete observations ``r_k`` made by one modality, each
drawn from its own table ``p(r_k | u)`` and conditionally independent given ``u``. The image shows its
readings as glyphs and the table as columns, both exactly recoverable from the rendered data (see
:mod:`mmbench.data.suite_render`), so the posterior over classes given what a missing pattern observes
is exact by enumeration:

``p(y | r_S) = sum_{u: y(u)=y} p(u) prod_{k in S} p(r_k | u) / sum_u p(u) prod_{k in S} p(r_k | u)``

and so is the population Bayes accuracy of the pattern (its *ceiling*),
``sum_{r_S} max_y sum_{u: y(u)=y} p(u) prod_{k in S} p(r_k | u)``, a finite sum over every value of the
pattern's readings. No Monte Carlo is involved anywhere. This module is numpy only (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The modalities each missing pattern observes (keys as in :data:`mmbench.data.batch.PATTERNS`).
PATTERN_MODALITIES: dict[str, tuple[str, ...]] = {
    "complete": ("image", "tabular"),
    "image_only": ("image",),
    "tabular_only": ("tabular",),
}

#: Largest ``U x (number of reading combinations)`` table :meth:`LatentModel.ceiling` will build.
MAX_ENUMERATION = 50_000_000


def symmetric_channel(values: np.ndarray, arity: int, noise: float) -> np.ndarray:
    """``U x arity`` table of a symmetric channel: the reading is ``values[u]`` with probability
    ``1 - noise``, otherwise each of the other ``arity - 1`` values with probability ``noise / (arity - 1)``."""
    values = np.asarray(values, dtype=np.int64)
    if not 0.0 <= noise <= (arity - 1) / arity + 1e-12:
        raise ValueError(f"channel noise must be in [0, {(arity - 1) / arity:.4g}] for {arity} values, got {noise}")
    probs = np.full((values.shape[0], arity), noise / (arity - 1) if arity > 1 else 0.0)
    probs[np.arange(values.shape[0]), values] = 1.0 - noise
    return probs


def partner_channel(values: np.ndarray, arity: int, noise: float, shift: int) -> np.ndarray:
    """``U x arity`` table of a confusion channel: the reading is ``values[u]`` with probability
    ``1 - noise`` and its partner ``(values[u] + shift) mod arity`` otherwise. Two modalities with
    different shifts confuse different pairs of values, so together they resolve what each leaves open."""
    values = np.asarray(values, dtype=np.int64)
    if not 0.0 <= noise <= 1.0 or shift % arity == 0:
        raise ValueError(f"partner channel: noise in [0, 1] and a shift that is not a multiple of {arity} expected")
    probs = np.zeros((values.shape[0], arity))
    rows = np.arange(values.shape[0])
    probs[rows, values] = 1.0 - noise
    probs[rows, (values + shift) % arity] += noise
    return probs


def uniform_channel(n_latent: int, arity: int) -> np.ndarray:
    """``U x arity`` table of a reading that carries no information (uniform whatever ``u`` is)."""
    return np.full((n_latent, arity), 1.0 / arity)


@dataclass(frozen=True)
class Reading:
    """One discrete observation of one modality: ``p(r = a | u) = probs[u, a]``."""

    name: str
    modality: str  # "image" or "tabular"
    probs: np.ndarray

    @property
    def arity(self) -> int:
        """Number of values the reading takes."""
        return int(self.probs.shape[1])


@dataclass(frozen=True)
class LatentModel:
    """A finite latent space with a prior, a class per configuration and conditionally independent readings.

    Attributes:
        factors: named latent factors, each ``U`` integers (the value of the factor in configuration u).
        prior: ``U`` probabilities.
        label: ``U`` class indices ``y(u)``.
        num_classes: number of classes.
        readings: the observations, in the order the renderers use them.
    """

    factors: dict[str, np.ndarray]
    prior: np.ndarray
    label: np.ndarray
    num_classes: int
    readings: tuple[Reading, ...]
    _onehot: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        u = self.prior.shape[0]
        if abs(self.prior.sum() - 1.0) > 1e-9 or (self.prior < 0).any():
            raise ValueError("the prior must be a probability vector")
        for r in self.readings:
            if r.probs.shape[0] != u or not np.allclose(r.probs.sum(1), 1.0):
                raise ValueError(f"reading {r.name!r}: expected {u} rows that sum to 1")
        onehot = np.zeros((u, self.num_classes))
        onehot[np.arange(u), self.label] = 1.0
        object.__setattr__(self, "_onehot", onehot)

    @property
    def n_latent(self) -> int:
        """Number of latent configurations U."""
        return int(self.prior.shape[0])

    def reading(self, name: str) -> Reading:
        """The reading called ``name``."""
        for r in self.readings:
            if r.name == name:
                return r
        raise KeyError(name)

    def readings_of(self, modalities: tuple[str, ...]) -> tuple[Reading, ...]:
        """The readings made by ``modalities``."""
        return tuple(r for r in self.readings if r.modality in modalities)

    # ------------------------------------------------------------------------------------ sampling
    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Draw ``n`` latent configurations and their readings: ``(u, {reading: values})``."""
        u = rng.choice(self.n_latent, size=n, p=self.prior)
        obs = {}
        for r in self.readings:
            cdf = np.cumsum(r.probs[u], axis=1)
            draw = rng.random(n)[:, None]
            obs[r.name] = np.minimum((draw >= cdf).sum(axis=1), r.arity - 1).astype(np.int64)
        return u, obs

    def latents(self, u: np.ndarray) -> dict[str, np.ndarray]:
        """The named latent factors of configurations ``u`` (and the class as ``y``)."""
        out = {name: values[u] for name, values in self.factors.items()}
        out["y"] = self.label[u]
        return out

    # ---------------------------------------------------------------------------------- posteriors
    def log_joint(self, obs: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
        """``N x U`` array of ``log p(u) + sum_k log p(r_k | u)`` over the readings ``names``."""
        n = len(next(iter(obs.values())))
        with np.errstate(divide="ignore"):
            out = np.broadcast_to(np.log(self.prior), (n, self.n_latent)).copy()
            for name in names:
                out += np.log(self.reading(name).probs[:, obs[name]].T)
        return out

    def posterior_from(self, obs: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
        """``N x C`` exact posterior over classes given the readings ``names`` (float64)."""
        lj = self.log_joint(obs, names)
        lj -= lj.max(axis=1, keepdims=True)
        w = np.exp(lj)
        w /= w.sum(axis=1, keepdims=True)
        return w @ self._onehot

    def posterior(self, obs: dict[str, np.ndarray], pattern: str) -> np.ndarray:
        """``N x C`` exact posterior over classes given what missing ``pattern`` observes."""
        names = tuple(r.name for r in self.readings_of(PATTERN_MODALITIES[pattern]))
        return self.posterior_from(obs, names)

    def posteriors(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Exact posteriors for every pattern of :data:`PATTERN_MODALITIES`."""
        return {p: self.posterior(obs, p) for p in PATTERN_MODALITIES}

    # ------------------------------------------------------------------------------------ ceilings
    def ceiling_from(self, names: tuple[str, ...]) -> float:
        """Population Bayes accuracy given the readings ``names``, by exact enumeration of their values."""
        joint = self.prior[:, None]
        for name in names:
            probs = self.reading(name).probs
            if joint.shape[0] * joint.shape[1] * probs.shape[1] > MAX_ENUMERATION:
                raise ValueError(f"too many reading combinations to enumerate ({joint.shape[1] * probs.shape[1]})")
            joint = (joint[:, :, None] * probs[:, None, :]).reshape(self.n_latent, -1)
        by_class = self._onehot.T @ joint  # C x (combinations): p(y, r_S)
        return float(by_class.max(axis=0).sum())

    def ceiling(self, pattern: str) -> float:
        """Population Bayes accuracy of missing ``pattern`` (exact)."""
        names = tuple(r.name for r in self.readings_of(PATTERN_MODALITIES[pattern]))
        return self.ceiling_from(names)

    def ceilings(self) -> dict[str, float]:
        """Exact ceilings of every pattern."""
        return {p: self.ceiling(p) for p in PATTERN_MODALITIES}


def product_space(sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Every configuration of independent discrete factors, as ``{name: U values}`` (first factor slowest)."""
    grids = np.meshgrid(*[np.arange(s) for s in sizes.values()], indexing="ij")
    return {name: g.reshape(-1) for name, g in zip(sizes, grids, strict=True)}


def mixed_radix(digits: list[np.ndarray], base: int) -> np.ndarray:
    """The integer whose base-``base`` digits are ``digits`` (most significant first)."""
    out = np.zeros_like(digits[0]) if digits else np.zeros(1, dtype=np.int64)
    for d in digits:
        out = out * base + d
    return out

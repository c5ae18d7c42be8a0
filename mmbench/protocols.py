"""Missingness simulation: presence masks from (scenario, rates, sim_seed).

Meaning of the rate eta (README.md#missingness-protocols), applied to a split of n samples with exact counts
(one rounding: ``k = round(eta * n)`` incomplete samples):

* ``none``: every sample complete.
* ``image``: k samples lose the image (tabular-only), the rest stay complete.
* ``tabular``: k samples lose the table (image-only).
* ``both``: k incomplete samples, ``k // 2`` image-only and ``k - k // 2`` tabular-only.
* ``imbalanced``: a rate per modality (MCE's setting); ``round(r_image * n)`` lose the image and a
  disjoint ``round(r_tabular * n)`` lose the table, so no sample loses both (requires the sum <= 1).
  Disjointness is mmbench's choice: MCE's official trainer drops each modality independently and, in
  effect, redraws the masks every epoch (the ``mce`` balancer's ``train_masks: per_epoch``).

Which samples is drawn from ``sim_seed`` (and the split name), never from the training seed. A
dataset's natural missingness is combined with the simulated one (logical AND); the simulation
prefers samples whose other modality is naturally present, so that combining empties as few rows as
possible, and rows left with no modality at all are removed from the split and counted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .core import IMAGE, MODALITIES, PATTERNS, TABULAR
from .errors import ConfigError

SCENARIOS = ("none", "image", "tabular", "both", "imbalanced")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class MissingSpec:
    """One protocol cell.

    Attributes:
        scenario: one of :data:`SCENARIOS`.
        rate: eta for ``image`` / ``tabular`` / ``both`` (train and val).
        rates: per-modality rates for ``imbalanced`` (``{"image": 0.5, "tabular": 0.1}``).
        test_rate: eta on the test split (sweeps); ``None`` = same as ``rate``.
        test_rates: per-modality test rates for ``imbalanced``; ``None`` = same as ``rates``.
    """

    scenario: str = "none"
    rate: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    test_rate: float | None = None
    test_rates: dict[str, float] | None = None

    def __post_init__(self) -> None:
        validate_missing(self)

    def for_split(self, split: str) -> tuple[float, dict[str, float]]:
        """The (rate, rates) that apply to ``split``."""
        if split == "test":
            rate = self.rate if self.test_rate is None else self.test_rate
            rates = self.rates if self.test_rates is None else self.test_rates
            return rate, dict(rates)
        return self.rate, dict(self.rates)

    def availability(self, split: str = "train") -> dict[str, float]:
        """Expected fraction of samples with each modality (labels tables like the papers)."""
        rate, rates = self.for_split(split)
        if self.scenario == "none":
            return {"image": 1.0, "tabular": 1.0}
        if self.scenario == "image":
            return {"image": 1 - rate, "tabular": 1.0}
        if self.scenario == "tabular":
            return {"image": 1.0, "tabular": 1 - rate}
        if self.scenario == "both":
            return {"image": 1 - rate / 2, "tabular": 1 - rate / 2}
        return {m: 1 - rates.get(m, 0.0) for m in MODALITIES}

    def label(self, split: str = "train") -> str:
        """Availability label like DFPL Table I, e.g. ``Image 100% / Tabular 70%`` (fractions *present*)."""
        av = self.availability(split)
        return " / ".join(f"{m.capitalize()} {round(100 * av[m]):d}%" for m in MODALITIES)

    def describe(self, split: str = "train") -> str:
        """The cell in both vocabularies: the missing rate eta and what it leaves available, e.g.
        ``both missing 50% (image 75% / tabular 75% available)``."""
        rate, rates = self.for_split(split)
        av = self.availability(split)
        avail = " / ".join(f"{m} {round(100 * av[m]):d}%" for m in MODALITIES)
        if self.scenario == "none":
            return "none missing (image 100% / tabular 100% available)"
        if self.scenario == "imbalanced":
            miss = ", ".join(f"{m} {round(100 * rates.get(m, 0.0)):d}%" for m in MODALITIES)
            return f"imbalanced missing {miss} ({avail} available)"
        return f"{self.scenario} missing {round(100 * rate):d}% ({avail} available)"


def _check_rate(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{what} must be in [0, 1], got {value}")
    return float(value)


def validate_missing(spec: MissingSpec) -> None:
    """Raise ``ConfigError`` for an unknown scenario, a rate outside [0, 1], or a rate that the
    scenario would silently ignore (a rate for ``none``, per-modality rates outside ``imbalanced``)."""
    if spec.scenario not in SCENARIOS:
        raise ConfigError(f"unknown missingness scenario {spec.scenario!r}; expected one of {', '.join(SCENARIOS)}")
    _check_rate(spec.rate, "rate")
    if spec.test_rate is not None:
        _check_rate(spec.test_rate, "test rate")
    if spec.scenario == "none" and (spec.rate != 0.0 or spec.test_rate not in (None, 0.0)):
        raise ConfigError(f"scenario 'none' keeps every modality: it takes no missing rate (got rate {spec.rate:g}"
                          + ("" if spec.test_rate is None else f", test rate {spec.test_rate:g}")
                          + "); use scenario image, tabular or both for a rate")
    if spec.scenario != "imbalanced" and (spec.rates or spec.test_rates):
        raise ConfigError(f"per-modality rates are for scenario 'imbalanced', not {spec.scenario!r}; "
                          "use a single rate")
    if spec.scenario == "imbalanced" and spec.rate != 0.0:
        raise ConfigError("scenario 'imbalanced' takes per-modality rates (image=..,tabular=..), not a single rate")
    if spec.scenario == "imbalanced" and spec.test_rate is not None:
        raise ConfigError("scenario 'imbalanced' takes per-modality test rates, not a single test rate")
    if spec.scenario == "imbalanced":
        for label, rates in (("rates", spec.rates), ("test rates", spec.test_rates)):
            if rates is None:
                continue
            unknown = set(rates) - set(MODALITIES)
            if unknown:
                raise ConfigError(f"imbalanced {label} name unknown modalities {sorted(unknown)}; "
                                  f"expected {list(MODALITIES)}")
            total = sum(_check_rate(v, f"imbalanced {label}[{k}]") for k, v in rates.items())
            if total > 1.0 + 1e-9:
                raise ConfigError(f"imbalanced {label} {dict(rates)} sum to {total:.2f} > 1: some sample "
                                  "would lose every modality")


def _pick(rng: np.random.Generator, k: int, preferred: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """k indices: a random draw from ``preferred`` first, then from the rest of ``allowed``."""
    first = rng.permutation(np.flatnonzero(preferred))
    rest = rng.permutation(np.flatnonzero(allowed & ~preferred))
    return np.concatenate([first, rest])[:k]


def simulate_presence(n: int, spec: MissingSpec, split: str, sim_seed: int,
                      natural: np.ndarray | None = None) -> np.ndarray:
    """Presence mask ``n x M`` (bool array) for one split (before natural missingness is AND-ed in).

    ``natural`` (``n x M`` bool) only steers *which* samples are drawn, never how many.
    """
    rate, rates = spec.for_split(split)
    nat = np.ones((n, len(MODALITIES)), dtype=bool) if natural is None else np.asarray(natural, dtype=bool)
    rng = np.random.default_rng(np.random.SeedSequence([int(sim_seed), _SPLIT_IDS[split], 7919]))
    present = np.ones((n, len(MODALITIES)), dtype=bool)
    everyone = np.ones(n, dtype=bool)
    if spec.scenario == "none":
        k_img, k_tab = 0, 0
    elif spec.scenario == "image":
        k_img, k_tab = int(round(rate * n)), 0
    elif spec.scenario == "tabular":
        k_img, k_tab = 0, int(round(rate * n))
    elif spec.scenario == "both":
        k = int(round(rate * n))
        k_img, k_tab = k - k // 2, k // 2  # "tabular-only" gets the odd one
    else:  # imbalanced
        k_img = int(round(rates.get("image", 0.0) * n))
        k_tab = int(round(rates.get("tabular", 0.0) * n))
        if k_img + k_tab > n:  # rounding can overshoot by one
            k_tab = n - k_img
    lose_img = _pick(rng, k_img, nat[:, TABULAR], everyone)
    present[lose_img, IMAGE] = False
    free = present[:, IMAGE].copy()  # a sample never loses both
    lose_tab = _pick(rng, k_tab, nat[:, IMAGE] & free, free)
    present[lose_tab, TABULAR] = False
    return present


def combine(simulated: np.ndarray, natural: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AND the simulated and natural masks; return (presence, rows that keep at least one modality)."""
    present = np.asarray(simulated, dtype=bool) & np.asarray(natural, dtype=bool)
    return present, present.any(axis=1)


def mask_hash(present: np.ndarray) -> str:
    """Stable short hash of a presence mask (identical masks <=> identical hash across methods)."""
    arr = np.ascontiguousarray(np.asarray(present).astype(np.uint8))
    h = hashlib.sha256()
    h.update(str(arr.shape).encode())
    h.update(np.packbits(arr).tobytes())
    return h.hexdigest()[:16]


def pattern_counts(present: np.ndarray) -> dict[str, int]:
    """How many rows of each missing pattern a mask holds."""
    arr = np.asarray(present, dtype=bool)
    return {name: int((arr == np.array(row, dtype=bool)).all(axis=1).sum()) for name, row in PATTERNS.items()}

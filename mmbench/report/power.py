"""Statistical power of paired comparisons: what gap a design can detect, and how many seeds it needs.

A comparison of two methods on one cell is *paired*: for each seed both saw the same data, masks and
test rows (Bouthillier et al., "Accounting for Variance in Machine Learning Benchmarks", MLSys 2021:
randomise every source of variation together across seeds and compare methods within a seed). The
per-seed differences ``d_s`` then have a standard deviation ``sd_d``, and the paired t-test with ``n``
seeds detects a true mean difference ``delta`` with probability

    power(delta) = P(|T| > t_{1-alpha/2, n-1}),   T ~ noncentral t(df = n - 1, nc = delta * sqrt(n) / sd_d).

The **minimum detectable difference** (MDD) is the ``delta`` with ``power = 0.8`` at ``alpha = 0.05``
(:func:`mdd`); a gap smaller than the MDD cannot be told from seed noise with that design, so tables
mark such methods as tied. :func:`seeds_needed` inverts it: the seeds a gap needs at the observed
spread. The Wilcoxon signed-rank test is somewhat less powerful than the t-test on normal data (Pitman
efficiency 0.955) and cannot reject at all below 6 seeds (smallest exact p = 2 / 2^n).

:func:`mcnemar_p` is the per-row complement (Dietterich, Neural Computation 1998): on the same test
rows, the exact McNemar test on the rows one method gets right and the other wrong. It measures
test-sample noise only, not the variance over training seeds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize
from scipy import stats as sps

POWER = 0.8
ALPHA = 0.05


def paired_t_power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test to detect a mean difference ``delta`` (noncentral t)."""
    if n < 2 or not sd > 0:
        return math.nan
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = abs(delta) * math.sqrt(n) / sd
    value = float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))
    if not math.isfinite(value):  # scipy's noncentral t breaks down at very large df: the normal limit
        value = float(sps.norm.sf(crit - nc) + sps.norm.cdf(-crit - nc))
    return value


def mdd(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """Minimum detectable difference of a paired design: the ``delta`` with ``paired_t_power = power``.

    ``sd`` is the standard deviation of the per-seed paired differences, ``n`` the number of seeds.
    NaN with fewer than 2 seeds (no spread to estimate); 0 when every difference is equal.
    """
    if n < 2 or not np.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    hi = sd
    while paired_t_power(hi, sd, n, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: paired_t_power(d, sd, n, alpha) - power, 0.0, hi, xtol=sd * 1e-6))


def seeds_needed(gap: float, sd: float, power: float = POWER, alpha: float = ALPHA, max_seeds: int = 10_000) -> int:
    """Fewest seeds for which a paired t-test detects ``gap`` with ``power`` at the observed ``sd``."""
    if gap == 0 or not np.isfinite(sd):
        return max_seeds
    if sd == 0:
        return 2
    lo, hi = 2, 2
    while paired_t_power(gap, sd, hi, alpha) < power:
        lo, hi = hi, hi * 2
        if hi > max_seeds:
            return max_seeds
    while lo < hi:  # power grows with n: bisect for the first n that reaches it
        mid = (lo + hi) // 2
        if paired_t_power(gap, sd, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def paired_t_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test p-value of ``a - b`` (NaN with fewer than 2 pairs; 1 if all equal)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    if d.size < 2:
        return math.nan
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(sps.ttest_rel(a[keep], b[keep]).pvalue)


def mcnemar_counts_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p from the discordant counts: the binomial test of ``only_a`` out of
    ``only_a + only_b`` at 1/2 (each discordant row is a fair coin under the null); 1 without discord."""
    if only_a + only_b == 0:
        return 1.0
    return float(sps.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """Exact two-sided McNemar test on paired per-row correctness: (b, c, p), ``b`` rows only A gets
    right, ``c`` rows only B gets right."""
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int((a & ~b_).sum()), int((~a & b_).sum())
    return only_a, only_b, mcnemar_counts_p(only_a, only_b)

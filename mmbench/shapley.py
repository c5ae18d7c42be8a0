"""Exact Shapley values over a handful of players (MCE's modality contributions).

Players are indexed ``0..n-1`` and a coalition is a bitmask (bit ``j`` set = player ``j`` in it), so
a value function is a vector ``v`` of length ``2**n`` with ``v[0] = v(empty set)``. Only *active*
players (``players`` bitmask, e.g. the modalities present anywhere in a batch) take part; an inactive
player gets 0 and the coalitions that contain it are ignored.

Three formulas (docs/methods.md#mce-shapley-variants):

* ``textbook``: ``phi_i = sum_{S subset of P minus i} |S|! (p-|S|-1)! / p! * (v(S + i) - v(S))``,
  ``p = |P|`` (Shapley, 1953). Efficient: ``sum_i phi_i = v(P) - v(empty)``.
* ``mce_official``: the variant of the official MCE code's IEMOCAP model (``byzhaoAI/MCE``,
  ``emotion_recog``), ``phi_i = sum_{S contains i, |S| >= 2} (|S|-1)! (L-|S|)! / L! * (v(S) - v({i}))
  + v({i}) / L`` with ``L = p``, the number of active players: the marginal of a coalition is taken
  against the singleton ``{i}``, not against ``S - i``. With two players both get ``v(12) / 2``.
* ``mce_avmnist``: the same sum in the official AV-MNIST model (``digit_recog``), where ``L`` is the
  number of non-empty coalitions of all ``n`` players, ``2**n - 1`` (3 for two modalities), and ``S``
  runs over every coalition of the ``n`` players. With two players ``phi_i = (v(12) + v(i)) / 6``.

Both are linear in ``v``; :func:`shapley_matrix` returns the ``n x 2**n`` matrix ``W`` with
``phi = W @ v``, so a training step evaluates them on the device without a host sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import factorial
from typing import Literal

import torch
from torch import Tensor

Variant = Literal["textbook", "mce_official", "mce_avmnist"]


def popcount(mask: int) -> int:
    """Number of set bits of ``mask``."""
    return bin(mask).count("1")


def coalitions(n: int, players: int | None = None) -> list[int]:
    """Non-empty coalitions (bitmasks) of the active ``players`` (default: all ``n``), ascending."""
    full = (1 << n) - 1 if players is None else players
    return [s for s in range(1, 1 << n) if s & ~full == 0]


def proper_subsets(mask: int) -> list[int]:
    """Non-empty proper subsets of ``mask`` (bitmasks), ascending."""
    return [s for s in range(1, mask) if s & ~mask == 0]


def shapley_matrix(n: int, players: int | None = None, variant: Variant = "textbook") -> Tensor:
    """``n x 2**n`` float64 matrix ``W`` with ``phi = W @ v`` (see module docstring)."""
    full = (1 << n) - 1 if players is None else players
    p = popcount(full)
    W = torch.zeros(n, 1 << n, dtype=torch.float64)
    if p == 0:
        return W
    for i in range(n):
        bit = 1 << i
        if not full & bit:
            continue
        if variant == "textbook":
            rest = full & ~bit
            for s in [0, *coalitions(n, rest)]:  # every S subset of P minus i, including the empty set
                k = popcount(s)
                w = factorial(k) * factorial(p - k - 1) / factorial(p)
                W[i, s | bit] += w
                W[i, s] -= w
        elif variant in ("mce_official", "mce_avmnist"):
            # IEMOCAP script: L = active players, coalitions of the active players; AV-MNIST script:
            # L = 2**n - 1 and every coalition of the n players (those holding an inactive one have v = 0)
            L, pool = (p, coalitions(n, full)) if variant == "mce_official" else ((1 << n) - 1, coalitions(n))
            for s in pool:
                k = popcount(s)
                if not s & bit or k < 2:
                    continue
                w = factorial(k - 1) * factorial(L - k) / factorial(L)
                W[i, s] += w
                W[i, bit] -= w
            W[i, bit] += 1.0 / L
        else:
            raise ValueError(f"unknown Shapley variant {variant!r}; expected 'textbook', 'mce_official' "
                             "or 'mce_avmnist'")
    return W


def shapley_table(n: int, variant: Variant = "textbook") -> Tensor:
    """``2**n x n x 2**n``: :func:`shapley_matrix` for every active-player bitmask (row = bitmask)."""
    return torch.stack([shapley_matrix(n, players, variant) for players in range(1 << n)])


def shapley_values(v: Sequence[float] | Tensor, n: int, players: int | None = None,
                   variant: Variant = "textbook") -> list[float]:
    """Shapley value of each of the ``n`` players for the value vector ``v`` (length ``2**n``)."""
    vec = torch.as_tensor(v, dtype=torch.float64)
    if vec.shape != (1 << n,):
        raise ValueError(f"value vector must have 2**n = {1 << n} entries (index = coalition bitmask)")
    return (shapley_matrix(n, players, variant) @ vec).tolist()

"""Training regimes: one fair budget for every method (``fair``), or each method's published recipe (``paper``).

``fair`` (the default): the trainer settings come from ``configs/defaults.yaml`` and the dataset card
(then a protocol's ``set:`` and ``--set train.X``) and are the same for every method of a run; a method
YAML cannot change them. A multi-stage method splits ``train.epochs`` between its stages by the shares
of its YAML's ``fair: stages:``, and a method (or balancer) parameter counted in epochs is set to its
``fair: params:`` share of ``train.epochs`` (at least one epoch).

``paper``: the method YAML's ``paper: train:`` (and ``paper: params:``) is laid over the card, with the
published epochs of each stage; ``--set train.epochs`` still shortens the stages, in the published
proportions. What a paper does not state comes from the card and the defaults.

The rules per method are in docs/training.md. This module is torch-free.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from .errors import ConfigError
from .typed import PosFloat, config

#: The regimes ``--regime`` and a protocol's ``regime:`` accept.
REGIMES: tuple[str, ...] = ("fair", "paper")
Regime = Literal["fair", "paper"]
DEFAULT_REGIME = "fair"

DEFAULTS_FILE = Path(__file__).parent / "configs" / "defaults.yaml"

Share = Annotated[PosFloat, Field(le=1)]


@config
class PaperRecipe:
    """A method YAML's ``paper:`` block: the published training recipe, used under ``--regime paper`` only.

    Attributes:
        source: where the values come from (paper section, official script).
        train: trainer settings (keys of ``train``; per-stage ones under ``stages: {<stage>: {...}}``).
        params: method parameters that differ from ``params:`` under the paper's recipe.
    """

    source: str = ""
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@config
class FairRule:
    """A method (or balancer) YAML's ``fair:`` block: how its schedule follows the run's budget.

    Attributes:
        stages: the method's training stages in order, each with its share of ``train.epochs``
            (the shares sum to 1).
        params: parameters counted in epochs, each with its share of ``train.epochs`` under ``fair``
            (resolved to ``max(1, round(share * epochs))``).
    """

    stages: dict[str, Share] = dataclasses.field(default_factory=dict)
    params: dict[str, PosFloat] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stages and not math.isclose(sum(self.stages.values()), 1.0, abs_tol=1e-3):
            raise ConfigError(f"stages: the shares must sum to 1, got {sum(self.stages.values()):g} "
                              f"({', '.join(f'{k} {v:g}' for k, v in self.stages.items())})")


@functools.cache
def _defaults() -> dict[str, Any]:
    from .config import load_yaml  # lazy: config imports this module

    data = load_yaml(DEFAULTS_FILE)
    if set(data) != {"train"} or not isinstance(data["train"], dict):
        raise ConfigError(f"{DEFAULTS_FILE}: expected one mapping `train:`")
    return data["train"]


def trainer_defaults() -> dict[str, Any]:
    """The ``train:`` mapping of ``configs/defaults.yaml`` (a fresh copy)."""
    import copy

    return copy.deepcopy(_defaults())


def round_half_up(x: float) -> int:
    """``x`` rounded to the nearest integer, halves up (``round`` rounds halves to even)."""
    return int(math.floor(x + 0.5))


def budget_epochs(share: float, epochs: int) -> int:
    """Epochs of a parameter with ``share`` of the budget: ``max(1, round(share * epochs))``."""
    return max(1, round_half_up(share * epochs))


def split_epochs(total: int, weights: dict[str, float], fixed: dict[str, int], where: str) -> dict[str, int]:
    """Stage epochs that sum to ``total``: stages in ``fixed`` keep theirs, the others split the rest by
    ``weights`` (each at least one epoch, the last taking the remainder of the rounding)."""
    out = {n: int(fixed[n]) for n in weights if n in fixed}
    free = [n for n in weights if n not in fixed]
    left = total - sum(out.values())
    if not free:
        return out
    if left < len(free):
        raise ConfigError(f"{where} train.epochs={total} is too short for the stages {', '.join(weights)}"
                          + (f" (with {', '.join(f'{k}={v}' for k, v in out.items())} fixed)" if out else "")
                          + f": each stage needs at least one epoch, so at least {len(free) + sum(out.values())}")
    w_left = sum(weights[n] for n in free)
    for i, n in enumerate(free):
        rest = len(free) - i - 1
        if rest == 0:
            out[n] = left
            break
        e = min(max(1, round_half_up(left * weights[n] / w_left)), left - rest)
        out[n] = e
        left -= e
        w_left -= weights[n]
    return {n: out[n] for n in weights}


def apply_budget(tree: dict[str, Any], regime: str, method_rule: FairRule, balancer_rule: FairRule,
                 paper_train: dict[str, Any], explicit: set[tuple[str, ...]], where: str) -> None:
    """Fill the budget-derived values of a resolved spec ``tree`` in place.

    * ``train.stages.<stage>.epochs`` for every stage of ``method_rule.stages``: explicitly set values
      (``--set train.stages.S.epochs``) are kept, the other stages split the rest of ``train.epochs``
      by their fair shares, or under ``paper`` by their published epochs when the recipe gives them all.
    * under ``fair``, each ``method_rule.params`` / ``balancer_rule.params`` entry not set explicitly.
    """
    train = tree["train"]
    total = train["epochs"]
    stages = train.setdefault("stages", {})
    names = list(method_rule.stages)
    unknown = [n for n in stages if n not in names]
    if unknown:
        known = f"its stages are {', '.join(names)}" if names else "it trains in one stage (set train.X directly)"
        raise ConfigError(f"{where} train.stages.{unknown[0]}: not a stage of this method; {known}")
    if names:
        for n in names:
            if not isinstance(stages.get(n, {}), dict):
                raise ConfigError(f"{where} train.stages.{n}: expected a mapping of trainer settings")
        fixed = {n: stages[n]["epochs"] for n in names if ("train", "stages", n, "epochs") in explicit}
        for n, v in fixed.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{where} train.stages.{n}.epochs: expected an integer >= 1, got {v!r}")
        published = {n: (paper_train.get("stages") or {}).get(n, {}).get("epochs") for n in names}
        weights = ({n: float(published[n]) for n in names} if regime == "paper" and all(published.values())
                   else dict(method_rule.stages))
        for n, e in split_epochs(total, weights, fixed, where).items():
            stages[n] = {**stages.get(n, {}), "epochs": e}
    if regime == "fair":
        for section, rule in (("method", method_rule), ("balancer", balancer_rule)):
            for p, share in rule.params.items():
                if (section, "params", p) not in explicit:
                    tree[section]["params"][p] = budget_epochs(share, total)


def check_regime(regime: str, where: str = "--regime") -> str:
    """``regime`` if it is known, else one line."""
    if regime not in REGIMES:
        raise ConfigError(f"{where} {regime!r}: expected one of {', '.join(REGIMES)}")
    return regime

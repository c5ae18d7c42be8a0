"""DFPL trains as designed: what the model *does* when it trains, not only what each equation computes.

Three checks, each with thresholds taken from healthy runs of the default ``dfpl`` (written next to
each threshold, with where it came from) and a matching check that ``dfpl-literal`` (raw squared
distances in Eq. 4-5, N(0, 1) TPE queries) shows the collapse signature, so the tests can fail:

* at initialisation no auxiliary loss term has a gradient more than a stated factor above the task's;
* after training, the prototypes vary across samples (between-sample variance / squared mean, and
  the same relative to the global features they are read from);
* after training, CMA puts a stated share of its attention on the prototype rows of H (Eq. 10).

The cards are parameters: to check another task (e.g. a structured suite), add an entry with
thresholds measured on a healthy run of it. Diagnostics are read from the run record
(``record["diagnostics"]``), the same place a user looks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from mmbench.config import resolve
from mmbench.diagnostics import term_grad_norms
from mmbench.protocols import MissingSpec
from mmbench.runner import build_pipeline, execute, load_data, presence_masks
from mmbench.train import Loader, seed_everything

CELL = MissingSpec("both", 0.5)
PFA_TERMS = ("pali_shared", "pali_spec", "cali")
BRANCHES = ("shared_image", "spec_image", "shared_tabular", "spec_tabular")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- initialisation -------------------------------------------------------------------------------

@dataclass(frozen=True)
class InitCheck:
    """Gradient balance at the first training step on ``card``."""

    card: str
    seeds: tuple[int, ...]
    max_aux_ratio: float  # largest |grad aux| / |grad task| allowed for the default
    max_pfa_ratio: float  # ... for the PFA terms (pali_shared, pali_spec, cali)
    literal_min_pali: float  # the literal reading's |grad pali_shared| / |grad task| is above this
    source: str


INIT_CHECKS = [
    InitCheck(
        "synthetic", (0, 1, 2), max_aux_ratio=15.0, max_pfa_ratio=1.0, literal_min_pali=15.0,
        source="dfpl, seeds 0-4, first batch: largest term tdis (Eq. 1 |cos|) at 5.0-11.0x, PFA terms "
               "<= 0.42x; dfpl-literal: pali_shared 31.8-43.5x (synthetic-tiny: tdis 4.4-10.9x, PFA <= 0.74x, "
               "literal pali_shared 16.9-28.4x)"),
]


def init_ratios(method: str, card: str, seed: int) -> dict[str, float]:
    """|grad term| / |grad task| of every auxiliary term on the first training batch of a fresh model."""
    spec = resolve(method, card, CELL, seed)
    info, splits, *_ = load_data(spec, None)
    presents, indices, _ = presence_masks(spec, splits)
    seed_everything(seed)
    pipeline = build_pipeline(spec, info).train()
    loader = Loader(splits["train"], presents["train"], spec.train.batch_size, shuffle=True, seed=seed,
                    indices=indices["train"])
    batch = next(iter(loader))
    out = pipeline(batch)
    norms = term_grad_norms(pipeline.loss_terms(batch, out), [p for p in pipeline.parameters() if p.requires_grad])
    return {k: v / norms["task"] for k, v in norms.items() if k not in ("task", "total")}


@pytest.mark.parametrize("check", INIT_CHECKS, ids=lambda c: c.card)
def test_no_auxiliary_term_dominates_the_task_gradient_at_init(check: InitCheck):
    for seed in check.seeds:
        ratios = init_ratios("dfpl", check.card, seed)
        assert max(ratios.values()) <= check.max_aux_ratio, (seed, ratios)
        assert max(ratios[k] for k in PFA_TERMS) <= check.max_pfa_ratio, (seed, ratios)


@pytest.mark.parametrize("check", INIT_CHECKS, ids=lambda c: c.card)
def test_literal_reading_is_dominated_by_the_ot_term_at_init(check: InitCheck):
    ratios = init_ratios("dfpl-literal", check.card, check.seeds[0])
    assert ratios["pali_shared"] > check.literal_min_pali, ratios


# ---- after training -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainedCheck:
    """Prototype variance and CMA attention after a full run of ``card`` (its own epochs)."""

    card: str
    seed: int
    min_proto_var: float  # every branch's proto_var_<b>_<m> above this (default)
    min_proto_to_global: float  # every branch's proto_to_global_var_<b>_<m> above this (default)
    min_attention: float  # attn_prototype_rows above this (default)
    literal_max_proto_to_global: float  # dfpl-literal: the smallest branch's quotient below this
    literal_max_attention: float | None  # dfpl-literal: attn_prototype_rows below this (None: not separated)
    source: str


TRAINED_CHECKS = [
    TrainedCheck(
        "synthetic-tiny", 0, min_proto_var=0.005, min_proto_to_global=0.1, min_attention=0.15,
        literal_max_proto_to_global=0.05, literal_max_attention=None,
        source="validation diagnostics, seeds 0-4: dfpl min proto_var 0.016-0.044, min proto_to_global "
               "0.18-0.31, attn_prototype_rows 0.22-0.43; dfpl-literal min proto_var 0.0009-0.0011, min "
               "proto_to_global 0.011-0.026, attn_prototype_rows 0.18-0.37 (8 epochs: not yet separated)"),
]
SLOW_TRAINED_CHECKS = [
    TrainedCheck(
        "synthetic", 0, min_proto_var=0.002, min_proto_to_global=0.1, min_attention=0.1,
        literal_max_proto_to_global=0.05, literal_max_attention=0.05,
        source="validation diagnostics, seeds 0-2 (12 epochs): dfpl min proto_var 0.0057-0.027, min "
               "proto_to_global 0.17-0.27, attn_prototype_rows 0.19-0.49; dfpl-literal min proto_var "
               "0.0002-0.0003, min proto_to_global 0.0013-0.0026, attn_prototype_rows 0.001-0.015"),
]


def trained(method: str, card: str, seed: int, tmp_path: Path) -> dict[str, Any]:
    """The validation diagnostics of a full run, read back from its record."""
    rec, _ = execute(resolve(method, card, CELL, seed), tmp_path)
    assert rec.status == "ok", rec.error
    probes = rec.diagnostics["probes"]
    assert probes and probes[0]["epoch"] == 1 and probes[0]["method"], "the first step is probed"
    return rec.diagnostics["val"]


def check_healthy(diag: dict[str, Any], check: TrainedCheck) -> None:
    for b in BRANCHES:
        assert diag[f"proto_var_{b}"] > check.min_proto_var, (b, diag)
        assert diag[f"proto_to_global_var_{b}"] > check.min_proto_to_global, (b, diag)
    assert diag["attn_prototype_rows"] > check.min_attention, diag


def check_collapsed(diag: dict[str, Any], check: TrainedCheck) -> None:
    assert min(diag[f"proto_to_global_var_{b}"] for b in BRANCHES) < check.literal_max_proto_to_global, diag
    if check.literal_max_attention is not None:
        assert diag["attn_prototype_rows"] < check.literal_max_attention, diag


@pytest.mark.parametrize("check", TRAINED_CHECKS, ids=lambda c: c.card)
def test_prototypes_vary_and_cma_uses_them(check: TrainedCheck, tmp_path: Path):
    check_healthy(trained("dfpl", check.card, check.seed, tmp_path), check)


@pytest.mark.slow
@pytest.mark.parametrize("check", TRAINED_CHECKS + SLOW_TRAINED_CHECKS, ids=lambda c: c.card)
def test_literal_reading_collapses(check: TrainedCheck, tmp_path: Path):
    check_collapsed(trained("dfpl-literal", check.card, check.seed, tmp_path), check)


@pytest.mark.slow
@pytest.mark.parametrize("check", SLOW_TRAINED_CHECKS, ids=lambda c: c.card)
def test_prototypes_vary_and_cma_uses_them_on_the_full_card(check: TrainedCheck, tmp_path: Path):
    check_healthy(trained("dfpl", check.card, check.seed, tmp_path), check)

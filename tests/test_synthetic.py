"""The embedded synthetic dataset: determinism, ceilings (closed form vs Monte Carlo), zero-fill."""

from __future__ import annotations

import numpy as np
import torch

from mmbench.data.synthetic import SyntheticDataset, SyntheticOptions, bit_accuracy
from tests.conftest import tiny_data


def test_generation_is_deterministic_from_the_seed() -> None:
    a = SyntheticDataset(SyntheticOptions(n_samples=50, image_size=8)).generate()
    b = SyntheticDataset(SyntheticOptions(n_samples=50, image_size=8)).generate()
    c = SyntheticDataset(SyntheticOptions(n_samples=50, image_size=8, seed=1)).generate()
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(a["images"], c["images"])


def test_splits_shapes_and_types() -> None:
    info, splits = tiny_data()
    assert info.num_classes == 8 and info.task == "multiclass"
    tr = splits["train"]
    assert tr.inputs["image"]["pixels"].dtype == torch.uint8
    assert tr.inputs["image"]["pixels"].shape[1:] == (3, 16, 16)
    assert tr.inputs["tabular"]["cat"].shape[1] == len(info.tabular.cat_cardinalities)
    assert tr.inputs["tabular"]["num"].shape[1] == info.tabular.n_num
    assert sum(len(s) for s in splits.values()) == 96


def test_bit_accuracy_by_hand() -> None:
    # one observation with noise std 1: precision P = 1, rho = sqrt(1/2), acc = 1/2 + asin(0.7071)/pi = 0.75
    assert abs(bit_accuracy([1.0]) - 0.75) < 1e-12
    assert bit_accuracy([]) == 0.5


def test_ceiling_orders_patterns() -> None:
    ceil = SyntheticDataset(SyntheticOptions()).ceiling()
    assert ceil["image_only"] < ceil["complete"]
    assert ceil["tabular_only"] < ceil["complete"]
    assert min(ceil.values()) > 1 / 8  # every pattern is better than chance


def test_ceiling_matches_monte_carlo_bayes_classifier() -> None:
    """The Bayes rule on the latent observations reaches the closed-form ceiling (200k samples)."""
    o = SyntheticOptions(n_samples=200_000, image_size=4)
    rng = np.random.default_rng(0)
    n = o.n_samples
    z = rng.standard_normal((n, 3))
    o_si = z[:, 0] + o.noise_shared_image * rng.standard_normal(n)
    o_st = z[:, 0] + o.noise_shared_tabular * rng.standard_normal(n)
    o_i = z[:, 1] + o.noise_image * rng.standard_normal(n)
    o_t = z[:, 2] + o.noise_tabular * rng.standard_normal(n)
    # Bayes decision per bit = sign of the precision-weighted observation sum; an unseen bit is a coin flip
    shared_both = o_si / o.noise_shared_image**2 + o_st / o.noise_shared_tabular**2
    guess = rng.integers(0, 2, n).astype(bool)
    truth = z > 0
    acc = {
        "complete": np.mean((shared_both > 0) == truth[:, 0]) * np.mean((o_i > 0) == truth[:, 1])
        * np.mean((o_t > 0) == truth[:, 2]),
        "image_only": np.mean(((o_si > 0) == truth[:, 0]) & ((o_i > 0) == truth[:, 1]) & (guess == truth[:, 2])),
        "tabular_only": np.mean(((o_st > 0) == truth[:, 0]) & (guess == truth[:, 1]) & ((o_t > 0) == truth[:, 2])),
    }
    ceil = SyntheticDataset(o).ceiling()
    for k in ceil:
        assert abs(acc[k] - ceil[k]) < 0.01, (k, acc[k], ceil[k])


def test_absent_raw_data_never_reaches_the_batch() -> None:
    """Collate zero-fills: changing the raw data of an absent modality changes no batch bit."""
    _, splits = tiny_data()
    sp = splits["train"]
    present = torch.ones(len(sp), 2, dtype=torch.bool)
    present[0, 0] = False
    present[1, 1] = False
    idx = torch.arange(4)
    before = sp.batch(idx, present)
    saved = (sp.inputs["image"]["pixels"][0].clone(), sp.inputs["tabular"]["num"][1].clone(),
             sp.inputs["tabular"]["cat"][1].clone())
    try:
        sp.inputs["image"]["pixels"][0] = 255 - sp.inputs["image"]["pixels"][0]
        sp.inputs["tabular"]["num"][1] += 100.0
        sp.inputs["tabular"]["cat"][1] = 1
        after = sp.batch(idx, present)
    finally:
        sp.inputs["image"]["pixels"][0], sp.inputs["tabular"]["num"][1], sp.inputs["tabular"]["cat"][1] = saved
    for m in before.inputs:
        for k in before.inputs[m]:
            assert torch.equal(before.inputs[m][k], after.inputs[m][k])
    assert before.inputs["image"]["pixels"][0].abs().sum() == 0
    assert before.inputs["tabular"]["num"][1].abs().sum() == 0

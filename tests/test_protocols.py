"""Missingness protocols: exact counts, seeds, natural missingness, hashing, labels."""

from __future__ import annotations

import numpy as np
import pytest

from mmbench.errors import ConfigError
from mmbench.protocols import MissingSpec, combine, mask_hash, pattern_counts, simulate_presence


@pytest.mark.parametrize("n", [1, 7, 100, 333])
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_exact_counts(n: int, rate: float) -> None:
    k = int(round(rate * n))
    img = pattern_counts(simulate_presence(n, MissingSpec("image", rate), "train", 0))
    assert img == {"complete": n - k, "image_only": 0, "tabular_only": k}
    tab = pattern_counts(simulate_presence(n, MissingSpec("tabular", rate), "train", 0))
    assert tab == {"complete": n - k, "image_only": k, "tabular_only": 0}
    both = pattern_counts(simulate_presence(n, MissingSpec("both", rate), "train", 0))
    assert both == {"complete": n - k, "image_only": k // 2, "tabular_only": k - k // 2}


def test_none_is_complete() -> None:
    assert simulate_presence(10, MissingSpec("none"), "val", 3).all()


@pytest.mark.parametrize("rates", [{"image": 0.2, "tabular": 0.1}, {"image": 0.8, "tabular": 0.2},
                                   {"image": 0.5}, {"image": 0.0, "tabular": 0.0}])
def test_imbalanced_never_both_absent(rates: dict) -> None:
    n = 250
    p = simulate_presence(n, MissingSpec("imbalanced", rates=rates), "train", 1)
    assert p.any(axis=1).all()
    assert int((~p[:, 0]).sum()) == round(rates.get("image", 0) * n)
    assert int((~p[:, 1]).sum()) == round(rates.get("tabular", 0) * n)


def test_sim_seed_decides_which_samples() -> None:
    spec = MissingSpec("both", 0.5)
    a = simulate_presence(200, spec, "train", 0)
    assert np.array_equal(a, simulate_presence(200, spec, "train", 0))
    assert not np.array_equal(a, simulate_presence(200, spec, "train", 1))
    assert not np.array_equal(a, simulate_presence(200, spec, "val", 0))  # splits draw independently
    np.random.seed(999)  # the training seed's global RNG must not matter
    assert np.array_equal(a, simulate_presence(200, spec, "train", 0))


def test_test_rate_applies_to_test_only() -> None:
    spec = MissingSpec("both", 0.2, test_rate=0.8)
    assert pattern_counts(simulate_presence(100, spec, "val", 0))["complete"] == 80
    assert pattern_counts(simulate_presence(100, spec, "test", 0))["complete"] == 20


def test_natural_missingness_is_combined_and_preferred() -> None:
    n = 100
    natural = np.ones((n, 2), dtype=bool)
    natural[:10, 0] = False  # 10 samples naturally lack the image
    sim = simulate_presence(n, MissingSpec("tabular", 0.5), "train", 0, natural)
    present, keep = combine(sim, natural)
    # the 50 table removals avoid the 10 image-less samples, so nobody ends up empty
    assert keep.all()
    assert pattern_counts(present) == {"complete": 40, "image_only": 50, "tabular_only": 10}


def test_combination_drops_rows_left_empty() -> None:
    natural = np.array([[False, True], [True, True]])
    sim = np.array([[True, False], [True, True]])
    present, keep = combine(sim, natural)
    assert keep.tolist() == [False, True]
    assert present.tolist() == [[False, False], [True, True]]


def test_bad_rates_raise() -> None:
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        MissingSpec("both", 1.5)
    with pytest.raises(ConfigError, match="sum to"):
        MissingSpec("imbalanced", rates={"image": 0.7, "tabular": 0.6})
    with pytest.raises(ConfigError, match="unknown missingness scenario"):
        MissingSpec("text", 0.5)
    with pytest.raises(ConfigError, match="unknown modalities"):
        MissingSpec("imbalanced", rates={"audio": 0.5})


def test_mask_hash_is_stable_and_sensitive() -> None:
    p = simulate_presence(50, MissingSpec("both", 0.5), "test", 4)
    assert mask_hash(p) == mask_hash(p.copy())
    q = p.copy()
    q[0] = ~q[0] if q[0].all() else np.array([True, True])
    assert mask_hash(p) != mask_hash(q)


def test_labels_like_the_papers() -> None:
    assert MissingSpec("tabular", 0.3).label() == "Image 100% / Tabular 70%"
    assert MissingSpec("image", 0.7).label() == "Image 30% / Tabular 100%"
    assert MissingSpec("both", 0.5).label() == "Image 75% / Tabular 75%"
    assert MissingSpec("imbalanced", rates={"image": 0.8, "tabular": 0.1}).label() == "Image 20% / Tabular 90%"
    assert MissingSpec("both", 0.5, test_rate=0.9).label("test") == "Image 55% / Tabular 55%"


def test_pattern_masks_partition_rows() -> None:
    import torch

    from mmbench.data.batch import pattern_masks

    p = torch.from_numpy(simulate_presence(31, MissingSpec("both", 0.6), "train", 2))
    masks = pattern_masks(p)
    assert int(sum(m.long() for m in masks.values()).max()) == 1
    assert pattern_counts(p.numpy()) == {k: int(v.sum()) for k, v in masks.items()}


def test_describe_says_missing_and_available() -> None:
    assert MissingSpec("both", 0.5).describe() == "both missing 50% (image 75% / tabular 75% available)"
    assert MissingSpec("none").describe() == "none missing (image 100% / tabular 100% available)"
    assert MissingSpec("imbalanced", rates={"image": 0.5, "tabular": 0.1}).describe() == \
        "imbalanced missing image 50%, tabular 10% (image 50% / tabular 90% available)"


@pytest.mark.parametrize("kwargs, message", [
    ({"scenario": "none", "rate": 0.5}, "takes no missing rate"),
    ({"scenario": "none", "test_rate": 0.3}, "takes no missing rate"),
    ({"scenario": "both", "rate": 0.5, "test_rates": {"image": 0.1}}, "are for scenario 'imbalanced'"),
    ({"scenario": "imbalanced", "rate": 0.5, "rates": {"image": 0.1}}, "not a single rate"),
])
def test_options_a_scenario_would_ignore_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MissingSpec(**kwargs)

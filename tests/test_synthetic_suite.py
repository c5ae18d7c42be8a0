"""The structured synthetic suite: exact posteriors and ceilings (by hand and against Monte Carlo), the
rendered data, options and cards, and the validity contrast of every task."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mmbench.config import load_dataset, load_protocol
from mmbench.data.options import SyntheticOptions
from mmbench.data.suite_model import PATTERN_MODALITIES, partner_channel, symmetric_channel
from mmbench.data.suite_options import (
    SUITE_ADAPTERS,
    ImbalanceOptions,
    InteractionOptions,
    PartsOptions,
    PredictOptions,
    SharedOptions,
    bind_run_seed,
)
from mmbench.data.suite_render import decode_cells, decode_readings
from mmbench.data.suite_tasks import BUILDERS
from mmbench.data.suite_validity import (
    CONTRASTS,
    imbalance_contrast,
    interaction_contrast,
    parts_contrast,
    predict_contrast,
    reliance_contrast,
    shared_contrast,
)
from mmbench.data.synthetic import SyntheticDataset, bit_posteriors
from mmbench.errors import ConfigError
from mmbench.registry import DATASETS, METHODS
from mmbench.typed import validate

TASKS = list(SUITE_ADAPTERS)
SMALL = {"n_train": 64, "n_val": 64, "n_test": 256}


def model_of(name: str, **options):
    return BUILDERS[name](SUITE_ADAPTERS[name][0](**options)).model


def adapter_of(name: str, **options):
    cls = DATASETS.get(name)
    return cls(cls.Options(**{"seed": 0, **options}))


# ----------------------------------------------------------------------------- by hand
def test_channel_tables_by_hand() -> None:
    assert np.allclose(symmetric_channel(np.array([0, 2]), 3, 0.3), [[0.7, 0.15, 0.15], [0.15, 0.15, 0.7]])
    assert np.allclose(partner_channel(np.array([0, 3]), 4, 0.2, 1), [[0.8, 0.2, 0, 0], [0.2, 0, 0, 0.8]])
    with pytest.raises(ValueError):
        symmetric_channel(np.array([0]), 2, 0.6)  # beyond pure noise


def test_parts_posterior_by_hand() -> None:
    """Image glyph 3 (confused with y+1 w.p. 0.1), table value 5 (confused with y+2 w.p. 0.3), 8 classes:
    image alone: y=3 (0.9) or y=2 (0.1); table alone: y=5 (0.7) or y=3 (0.3); together only y=3 fits."""
    post = model_of("suite-parts").posteriors({"part": np.array([3]), "y_tab": np.array([5])})
    expect = {"complete": {3: 1.0}, "image_only": {3: 0.9, 2: 0.1}, "tabular_only": {5: 0.7, 3: 0.3}}
    for pattern, probs in expect.items():
        want = np.zeros(8)
        for k, p in probs.items():
            want[k] = p
        assert np.allclose(post[pattern][0], want), pattern


def test_reliance_posterior_by_hand() -> None:
    """Image shows 1 (an image class), table shows 6 (a table class): the image decided with prior weight
    0.9 for class 1, the table with 0.8 for class 6, and a non-decider's match has probability 1/8."""
    m = model_of("suite-reliance")
    post = m.posteriors({"y_img": np.array([1]), "y_tab": np.array([6])})["complete"][0]
    hit, miss = 0.95, 0.05 / 7  # decider reads y / another value
    w = np.full(8, 0.0)
    for y in range(8):
        p_img_decides = 0.9 if y < 4 else 0.2
        lik_img_dec = (hit if y == 1 else miss) / 8  # decider image reads 1, random table shows 6
        lik_tab_dec = (hit if y == 6 else miss) / 8
        w[y] = p_img_decides * lik_img_dec + (1 - p_img_decides) * lik_tab_dec
    assert np.allclose(post, w / w.sum())


def test_ceilings_by_hand() -> None:
    assert model_of("suite-imbalance").ceilings() == pytest.approx(
        {"complete": 1.0, "image_only": 0.7, "tabular_only": 0.95})
    pred = model_of("suite-predict", coupling=0.0, noise_image=0.1, noise_tabular=0.2).ceilings()
    assert pred == pytest.approx({"complete": 0.9 * 0.8, "image_only": 0.9 / 4, "tabular_only": 0.8 / 4})
    xor = model_of("suite-interaction", redundant=0, unique_image=0, unique_tabular=0, synergy=1).ceilings()
    assert xor == pytest.approx({"complete": 0.97 * 0.94 + 0.03 * 0.06, "image_only": 0.5, "tabular_only": 0.5})
    one = model_of("suite-shared", n_copies=1).ceilings()
    assert one["image_only"] == pytest.approx(0.5) and one["tabular_only"] == pytest.approx(0.7)


def test_synthetic_bit_posterior_by_hand() -> None:
    # one observation o = 1 with noise std 1: precision 2, mean 1/2, P(z > 0) = Phi(0.5 * sqrt(2)) = 0.76025
    assert bit_posteriors([(np.array([1.0]), 1.0)], 1)[0] == pytest.approx(0.760250, abs=1e-6)
    assert bit_posteriors([], 3).tolist() == [0.5, 0.5, 0.5]


# ------------------------------------------------------------------------ against Monte Carlo
@pytest.mark.parametrize("name", TASKS)
def test_ceiling_and_posteriors_against_monte_carlo(name: str) -> None:
    """On 100k sampled rows the Bayes rule's accuracy and the mean top posterior match the exact ceiling
    within 4 standard errors, and the posteriors are calibrated (per class and per confidence bin)."""
    m = model_of(name)
    u, obs = m.sample(100_000, np.random.default_rng(123))
    y = m.label[u]
    onehot = np.eye(m.num_classes)[y]
    for pattern in PATTERN_MODALITIES:
        post, ceil = m.posterior(obs, pattern), m.ceiling(pattern)
        assert np.allclose(post.sum(1), 1.0)
        correct = post.argmax(1) == y
        assert abs(correct.mean() - ceil) < 4 * np.sqrt(ceil * (1 - ceil) / len(y)) + 1e-9, (pattern, correct.mean())
        top = post.max(1)
        assert abs(top.mean() - ceil) < 4 * top.std() / np.sqrt(len(y)) + 1e-9, (pattern, top.mean())
        resid = onehot - post  # E[1{y=c} - p_c] = 0 for every class
        assert (np.abs(resid.mean(0)) < 4 * resid.std(0) / np.sqrt(len(y)) + 1e-9).all(), pattern
        bins = np.minimum((top * 10).astype(int), 9)
        for b in np.unique(bins):
            rows = bins == b
            if rows.sum() >= 500:
                gap = correct[rows].mean() - top[rows].mean()
                assert abs(gap) < 4 * np.sqrt(top[rows].mean() * (1 - top[rows].mean()) / rows.sum()) + 1e-6


def test_synthetic_posteriors_against_monte_carlo() -> None:
    """The sanity member's closed-form posteriors: the Bayes rule on 200k rows reaches the closed-form ceiling."""
    adapter = SyntheticDataset(SyntheticOptions(n_samples=200_000, image_size=4, split_fractions=(0.0, 0.0, 1.0)))
    _, splits = adapter.load()
    te = splits["test"]
    y = te.y.numpy()
    for pattern, ceil in adapter.ceiling().items():
        post = te.extra["bayes_posterior"][pattern]
        assert np.allclose(post.sum(1), 1.0)
        acc = (post.argmax(1) == y).mean()
        assert abs(acc - ceil) < 4 * np.sqrt(ceil * (1 - ceil) / len(y)), (pattern, acc, ceil)
    assert set(te.extra["latents"]) == {"z_s", "z_i", "z_t", "y"}


# ---------------------------------------------------------------------------- the adapters
@pytest.mark.parametrize("name", TASKS)
def test_splits_carry_exact_posteriors_of_the_rendered_data(name: str) -> None:
    """Every split has images, a table, posteriors per pattern and latents; the readings decoded back from
    the pixels and the table give exactly the stored posteriors."""
    adapter = adapter_of(name, **SMALL)
    info, splits = adapter.load()
    task = adapter.task()
    for split_name, sp in splits.items():
        n = len(sp)
        assert sp.inputs["image"]["pixels"].shape == (n, *info.image_shape)
        assert sp.inputs["image"]["pixels"].dtype == torch.uint8
        assert sp.inputs["tabular"]["cat"].shape == (n, len(info.tabular.cat_cardinalities))
        assert sp.inputs["tabular"]["num"].shape == (n, info.tabular.n_num)
        for pattern in PATTERN_MODALITIES:
            post = sp.extra["bayes_posterior"][pattern]
            assert post.shape == (n, info.num_classes) and post.dtype == np.float64
        assert np.array_equal(sp.extra["latents"]["y"], sp.y.numpy())
        cells, framed = decode_cells(sp.inputs["image"]["pixels"].numpy(), adapter.options.grid)
        decoded = decode_readings(task, cells, framed)
        for j, col in enumerate(task.columns):
            decoded[col] = sp.inputs["tabular"]["cat"][:, j].numpy()
        for pattern in PATTERN_MODALITIES:  # the posterior given the data is the stored one
            again = task.model.posterior(decoded, pattern)
            assert np.allclose(again, sp.extra["bayes_posterior"][pattern]), (split_name, pattern)


def test_decoded_glyphs_are_the_readings() -> None:
    """On the parts task the framed cell's glyph is the image reading and the distractors are unframed."""
    adapter = adapter_of("suite-parts", **SMALL)
    arr = adapter.generate("test")
    cells, framed = decode_cells(arr["images"], adapter.options.grid)
    assert (framed.sum(1) == 1).all()
    assert np.array_equal(cells[framed], arr["observations"]["part"])
    assert ((cells >= 0).sum(1) == 1 + adapter.options.n_distractors).all()
    noisy = adapter_of("suite-parts", **SMALL, pixel_noise=0.05).generate("test")  # the noise cap
    assert np.array_equal(decode_cells(noisy["images"], 4)[0], noisy["cells"])


def test_generation_is_deterministic_and_test_rows_ignore_the_train_size() -> None:
    a = adapter_of("suite-interaction", **SMALL).generate("test")
    b = adapter_of("suite-interaction", **{**SMALL, "n_train": 128}).generate("test")
    c = adapter_of("suite-interaction", **{**SMALL, "seed": 1}).generate("test")
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["num"], b["num"])
    assert not np.array_equal(a["images"], c["images"])


def test_seed_run_is_bound_by_the_spec_builder() -> None:
    opts = PartsOptions(seed="run", **SMALL)
    with pytest.raises(ConfigError, match="seed is 'run'"):
        DATASETS.get("suite-parts")(opts).load()
    assert bind_run_seed(opts, 7).seed == 7
    assert bind_run_seed(PartsOptions(seed=3), 7).seed == 3
    with pytest.raises(ConfigError, match="seed is 'run'"):
        SyntheticDataset(SyntheticOptions(seed="run", n_samples=20)).load()
    assert bind_run_seed(SyntheticOptions(seed="run"), 4).seed == 4


def test_bad_options_are_one_line_errors() -> None:
    cases = [(PartsOptions, {"n_distractors": 16}, "grid 4 has 16"),
             (PartsOptions, {"noise_image": 0.7}, "noise_image"),
             (InteractionOptions, {"arity": 4, "redundant": 3, "unique_image": 1}, "expected 2..64"),
             (SharedOptions, {"noise_image": 0.9}, "pure noise"),
             (ImbalanceOptions, {"n_classes": 2}, "n_classes"),
             (PredictOptions, {"coupling": 1.5}, "coupling"),
             (PartsOptions, {"distractors": 3}, "unknown key")]
    for cls, data, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            validate(cls, data, "datasets/x.yaml: options")
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------- cards and protocol
SUITE_CARDS = ["suite-sanity", *TASKS]


@pytest.mark.parametrize("card", [*SUITE_CARDS, *[f"{c}-tiny" for c in SUITE_CARDS]])
def test_cards_validate_and_draw_their_data_from_the_run_seed(card: str) -> None:
    c = load_dataset(card)
    assert c.options["seed"] == "run"
    if not card.endswith("-tiny"):
        cls = DATASETS.get(c.adapter)
        opts = bind_run_seed(validate(cls.Options, c.options, card), 0)
        sizes = (opts.n_train, opts.n_val, opts.n_test) if hasattr(opts, "n_test") else \
            tuple(round(f * opts.n_samples) for f in opts.split_fractions)
        assert 1000 <= sizes[0] <= 3000 and sizes[1] > 0 and sizes[2] >= 20_000


@pytest.mark.parametrize("card", SUITE_CARDS)
def test_card_notes_state_the_exact_ceilings(card: str) -> None:
    c = load_dataset(card)
    found = re.search(r"complete (\d+\.\d+), image-only (\d+\.\d+), tabular-only (\d+\.\d+)", c.notes)
    assert found, "the card's notes state its ceilings"
    cls = DATASETS.get(c.adapter)
    ceil = cls(bind_run_seed(validate(cls.Options, c.options, card), 0)).ceiling()
    for value, pattern in zip(found.groups(), ("complete", "image_only", "tabular_only"), strict=True):
        assert float(value) == pytest.approx(100 * ceil[pattern], abs=0.006), pattern


def test_protocol_runs_every_method_on_every_task() -> None:
    proto = load_protocol("synthetic-suite")
    assert set(proto.datasets) == set(SUITE_CARDS)
    assert {"late_fusion+dpl", "late_fusion+mce"} <= set(proto.methods)
    assert set(METHODS.names()) <= set(proto.methods)  # every registered method, by its base config
    assert len(proto.seeds) >= 5 and proto.scenarios == ["both"] and proto.rates == [0.5]


# --------------------------------------------------------------------------- validity contrasts
def assert_contrast(c, min_gap: float, check_ceiling: bool = True) -> None:
    assert c.gap >= min_gap, (c.task, c.acc_without, c.acc_with)
    if check_ceiling:
        for acc in (c.acc_without, c.acc_with):
            assert acc <= c.ceiling + 4 * c.se(c.ceiling), (c.task, acc, c.ceiling)


def test_parts_query_read_out_beats_mean_pooling() -> None:
    """Over the same cell tokens, one attention query reaches the image-only ceiling; a mean does not."""
    torch.set_num_threads(1)
    c = parts_contrast(epochs=15, n_test=5000)
    assert_contrast(c, 0.4)
    assert c.acc_with > c.ceiling - 0.05


@pytest.mark.parametrize("fn,min_gap,check_ceiling", [
    (predict_contrast, 0.4, True), (imbalance_contrast, 0.15, False), (reliance_contrast, 0.05, True),
    (interaction_contrast, 0.25, True), (shared_contrast, 0.1, True)])
def test_readings_contrasts_at_full_size(fn, min_gap: float, check_ceiling: bool) -> None:
    """Each task separates its two read-outs by a wide margin on its 20,000 test rows."""
    assert_contrast(fn(), min_gap, check_ceiling)


@pytest.mark.parametrize("fn,knob_off", [
    (predict_contrast, {"coupling": 0.0}),
    (imbalance_contrast, {"noise_image": 0.05, "noise_tabular": 0.05}),
    (reliance_contrast, {"reliance_image": 0.5, "reliance_tabular": 0.5}),
    (interaction_contrast, {"synergy": 0}),
    (shared_contrast, {"n_copies": 1})])
def test_contrasts_vanish_with_their_knob_off(fn, knob_off: dict) -> None:
    """The gap comes from the knob: with the structure switched off the two read-outs agree."""
    assert abs(fn(n_test=5000, **knob_off).gap) < 0.02


@pytest.mark.slow
def test_parts_contrast_full_size_and_without_distractors() -> None:
    torch.set_num_threads(1)
    assert_contrast(parts_contrast(), 0.5)
    assert abs(parts_contrast(n_distractors=0, n_test=5000).gap) < 0.03


def test_every_task_has_a_contrast() -> None:
    assert set(CONTRASTS) == set(TASKS)


def test_seed_run_draws_data_from_the_run_seed_and_seeds_pool_in_tables(tmp_path) -> None:
    """``seed: run`` stays ``run`` in the spec (seeds of one experiment pool), the data follows the seed."""
    from mmbench.config import resolve
    from mmbench.protocols import MissingSpec
    from mmbench.report.tables import summarize
    from mmbench.runner import execute

    fast = {"train.epochs": 1, "data.n_train": 64, "data.n_val": 32, "data.n_test": 64}
    specs = [resolve("late_fusion", "suite-parts-tiny", MissingSpec("both", 0.5), s, overrides=fast) for s in (0, 1)]
    assert [s.dataset.options.seed for s in specs] == ["run", "run"]
    assert [s.data_options.seed for s in specs] == [0, 1]
    recs = [execute(s, tmp_path)[0] for s in specs]
    assert recs[0].masks["test"].hash != recs[1].masks["test"].hash or recs[0].metrics != recs[1].metrics
    assert recs[0].pooling_key == recs[1].pooling_key
    row = summarize(recs).iloc[0]
    assert row["n"] == 2 and row["method"] == "late_fusion"

"""The embedded ``synthetic`` dataset: image + table with a known generative model.

Generative model (all latents independent standard normal):

* ``z_s`` shared, ``z_i`` image-specific, ``z_t`` tabular-specific.
* The class is the 3-bit code ``y = 4*[z_s>0] + 2*[z_i>0] + [z_t>0]`` (8 classes).
* The image observes ``o_sI = z_s + e`` and ``o_i = z_i + e``; the table observes ``o_sT = z_s + e``
  and ``o_t = z_t + e`` (independent Gaussian noise with the card's standard deviations).
* The image is rendered non-linearly from ``(o_sI, o_i)`` plus nuisance factors (stripe tilt
  encodes ``o_sI``, the horizontal position of a blob encodes ``o_i``; background colour, blob
  height and pixel noise are nuisance). The table holds ``o_sT`` and ``exp(o_t)`` as continuous
  columns, a binned ``o_t`` as a categorical column, plus nuisance continuous and categorical columns.

So each modality carries information the other lacks, and the Bayes-optimal accuracy per missing
pattern is closed-form: the bits are independent given the observations, a bit seen through
observations of total noise precision ``P`` is recovered with probability
``1/2 + arcsin(sqrt(P/(P+1)))/pi`` (Sheppard's formula), and an unseen bit with 1/2. The product over
the three bits is the ceiling of each pattern, an upper bound for any classifier of the rendered data.

Per row, the same reasoning gives the posterior (:func:`bit_posteriors`): the bit of ``z ~ N(0, 1)``
seen through ``o_k = z + N(0, s_k^2)`` is 1 with probability ``Phi(m / v^(1/2))``, where
``v = 1 / (1 + sum_k s_k^-2)`` and ``m = v sum_k o_k s_k^-2``; the class posterior of a pattern is the
product over the bits (an unseen bit: 1/2). It conditions on the latent observations the image renders
(an oracle that reads stripe tilt and blob position exactly), so it is the Bayes posterior of the
table-and-observations, an upper bound for a classifier of the pixels. Each split carries it as
``split.extra["bayes_posterior"]``, with ``extra["latents"]`` (``z_s``, ``z_i``, ``z_t``, ``y``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm

from ..errors import ConfigError
from ..registry import register_dataset
from .base import DataInfo, DatasetAdapter, Split, TabularSchema
from .options import SyntheticOptions


def bit_accuracy(noise_stds: list[float]) -> float:
    """Bayes accuracy of the sign of ``z ~ N(0,1)`` seen through ``z + N(0, s^2)`` for each s."""
    precision = sum(1.0 / s**2 for s in noise_stds)
    if precision == 0:
        return 0.5
    rho = math.sqrt(precision / (precision + 1.0))
    return 0.5 + math.asin(rho) / math.pi


#: The latent observations the image (first two) and the table (last two) render, in ``generate()`` order.
OBSERVATIONS = ("o_shared_image", "o_image", "o_shared_tabular", "o_tabular")


def bit_posteriors(obs: list[tuple[np.ndarray, float]], n: int) -> np.ndarray:
    """``P(z > 0 | o_1..o_k)`` for ``z ~ N(0,1)`` and observations ``o_k = z + N(0, s_k^2)`` given as
    ``(o_k, s_k)`` pairs; 1/2 for every row when there is none."""
    if not obs:
        return np.full(n, 0.5)
    precision = 1.0 + sum(1.0 / s**2 for _, s in obs)
    mean = sum(o / s**2 for o, s in obs) / precision
    return norm.cdf(mean * np.sqrt(precision))


def class_posteriors(o_si: np.ndarray, o_st: np.ndarray, o_i: np.ndarray, o_t: np.ndarray,
                     o: SyntheticOptions) -> dict[str, np.ndarray]:
    """Exact posterior over the 8 classes ``4 b_s + 2 b_i + b_t`` per missing pattern (``N x 8`` each)."""
    n = o_si.shape[0]
    shared = {"complete": [(o_si, o.noise_shared_image), (o_st, o.noise_shared_tabular)],
              "image_only": [(o_si, o.noise_shared_image)], "tabular_only": [(o_st, o.noise_shared_tabular)]}
    out = {}
    for pattern, shared_obs in shared.items():
        sees_image, sees_table = pattern != "tabular_only", pattern != "image_only"
        bits = [bit_posteriors(shared_obs, n),
                bit_posteriors([(o_i, o.noise_image)] if sees_image else [], n),
                bit_posteriors([(o_t, o.noise_tabular)] if sees_table else [], n)]
        post = np.ones((n, 8))
        for k in range(8):
            for j, p1 in enumerate(bits):
                post[:, k] *= p1 if (k >> (2 - j)) & 1 else 1.0 - p1
        out[pattern] = post
    return out


def render_images(o_s: np.ndarray, o_i: np.ndarray, size: int, rng: np.random.Generator,
                  pixel_noise: float) -> np.ndarray:
    """Render ``N x 3 x size x size`` uint8 images from the image's latent observations."""
    n = o_s.shape[0]
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # [-1, 1]
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    tilt = (np.pi / 3) * np.tanh(o_s)[:, None, None]  # stripe orientation encodes o_s
    stripes = 0.5 + 0.5 * np.sin(6.0 * (xx[None] * np.cos(tilt) + yy[None] * np.sin(tilt)))
    cx = 0.6 * np.tanh(o_i)[:, None, None]  # blob x-position encodes o_i
    cy = rng.uniform(-0.5, 0.5, size=(n, 1, 1))  # nuisance
    blob = np.exp(-((xx[None] - cx) ** 2 + (yy[None] - cy) ** 2) / (2 * 0.18**2))
    bg = rng.uniform(0.1, 0.5, size=(n, 3, 1, 1))  # nuisance colour
    img = bg * (1 - blob[:, None]) + blob[:, None] * np.array([1.0, 0.9, 0.2])[None, :, None, None]
    img = img * (0.6 + 0.4 * stripes[:, None])
    img = img + pixel_noise * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@register_dataset("synthetic")
class SyntheticDataset(DatasetAdapter):
    """Procedural image + table data with per-pattern Bayes ceilings (no files needed)."""

    Options = SyntheticOptions
    options: SyntheticOptions

    def generate(self) -> dict[str, np.ndarray]:
        """Draw every array of the dataset from ``options.seed`` (deterministic)."""
        o = self.options
        if o.seed == "run":
            raise ConfigError("synthetic: options.seed is 'run' but no run seed was bound (the spec builder binds "
                              "it with mmbench.data.suite_options.bind_run_seed); pass a number with --set data.seed=N")
        rng = np.random.default_rng(o.seed)
        n = o.n_samples
        z = rng.standard_normal((n, 3))
        z_s, z_i, z_t = z[:, 0], z[:, 1], z[:, 2]
        o_si = z_s + o.noise_shared_image * rng.standard_normal(n)
        o_st = z_s + o.noise_shared_tabular * rng.standard_normal(n)
        o_i = z_i + o.noise_image * rng.standard_normal(n)
        o_t = z_t + o.noise_tabular * rng.standard_normal(n)
        y = 4 * (z_s > 0) + 2 * (z_i > 0) + (z_t > 0)
        images = render_images(o_si, o_i, o.image_size, rng, o.pixel_noise)
        nuis = rng.standard_normal((n, o.n_nuisance_num))
        num = np.column_stack([o_st, np.exp(o_t), nuis]).astype(np.float32)
        num[:, 1] = (num[:, 1] - 1.65) / 2.16  # standardise the log-normal column (its moments)
        edges = np.array([-1.0, -0.3, 0.3, 1.0])
        cat = np.column_stack([np.digitize(o_t, edges), rng.integers(0, 4, n)]).astype(np.int64)
        return {"images": images, "num": num, "cat": cat, "y": y.astype(np.int64),
                "latents": z.astype(np.float32), "observations": np.column_stack([o_si, o_i, o_st, o_t])}

    def info(self) -> DataInfo:
        """Static description (8 classes, RGB images, a 2-categorical + k-continuous table)."""
        o = self.options
        schema = TabularSchema(
            cat_cardinalities=(5, 4), n_num=2 + o.n_nuisance_num,
            cat_names=("o_t_bin", "nuisance_cat"),
            num_names=("o_shared", "exp_o_t", *[f"nuisance_{k}" for k in range(o.n_nuisance_num)]),
        )
        return DataInfo(name="synthetic", task="multiclass", num_classes=8,
                        image_shape=(3, o.image_size, o.image_size), tabular=schema,
                        class_names=tuple(f"{k:03b}" for k in range(8)), primary_metric="accuracy")

    def load(self) -> tuple[DataInfo, dict[str, Split]]:
        """Generate the data and cut it into train/val/test by the card's fractions."""
        arr = self.generate()
        obs = dict(zip(OBSERVATIONS, arr["observations"].T, strict=True))
        posterior = class_posteriors(obs["o_shared_image"], obs["o_shared_tabular"], obs["o_image"],
                                     obs["o_tabular"], self.options)
        n = self.options.n_samples
        fr = self.options.split_fractions
        n_train, n_val = int(round(fr[0] * n)), int(round(fr[1] * n))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        splits = {}
        for name, (a, b) in bounds.items():
            splits[name] = Split(
                inputs={"image": {"pixels": torch.from_numpy(arr["images"][a:b])},
                        "tabular": {"cat": torch.from_numpy(arr["cat"][a:b]),
                                    "num": torch.from_numpy(arr["num"][a:b])}},
                y=torch.from_numpy(arr["y"][a:b]),
                natural_present=torch.ones(b - a, 2, dtype=torch.bool),
                extra={"bayes_posterior": {k: v[a:b] for k, v in posterior.items()},
                       "latents": {"z_s": arr["latents"][a:b, 0], "z_i": arr["latents"][a:b, 1],
                                   "z_t": arr["latents"][a:b, 2], "y": arr["y"][a:b]},
                       "observations": {k: v[a:b] for k, v in obs.items()}},
            )
        return self.info(), splits

    def ceiling(self) -> dict[str, float]:
        """Closed-form Bayes accuracy for each missing pattern (see the module docstring)."""
        o = self.options
        shared_both = bit_accuracy([o.noise_shared_image, o.noise_shared_tabular])
        shared_img = bit_accuracy([o.noise_shared_image])
        shared_tab = bit_accuracy([o.noise_shared_tabular])
        img_bit, tab_bit = bit_accuracy([o.noise_image]), bit_accuracy([o.noise_tabular])
        return {
            "complete": shared_both * img_bit * tab_bit,
            "image_only": shared_img * img_bit * 0.5,
            "tabular_only": shared_tab * 0.5 * tab_bit,
        }

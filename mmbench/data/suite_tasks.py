"""The tasks of the structured synthetic suite: each a latent model plus where its readings are drawn.

Every builder returns a :class:`Task`: the :class:`~mmbench.data.suite_model.LatentModel` (latent
factors, prior, class, readings with their noise), which image readings are drawn as glyph parts (with
or without a frame), how many unframed distractor glyphs are scattered among them, and which readings
become table columns. The generative models, the claims they test and the paper sentences behind them
are in ``docs/synthetic-suite.md``. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .suite_model import (
    LatentModel,
    Reading,
    mixed_radix,
    partner_channel,
    product_space,
    symmetric_channel,
    uniform_channel,
)
from .suite_options import (
    ImbalanceOptions,
    InteractionOptions,
    PartsOptions,
    PredictOptions,
    RelianceOptions,
    SharedOptions,
)


@dataclass(frozen=True)
class ImagePart:
    """An image reading drawn as one glyph cell: value ``v`` is glyph ``glyphs[v]``; ``framed`` adds a
    1-px frame around the cell."""

    reading: str
    glyphs: tuple[int, ...]
    framed: bool = False


@dataclass(frozen=True)
class Task:
    """A generative model and its layout in the two modalities."""

    name: str
    model: LatentModel
    parts: tuple[ImagePart, ...]
    columns: tuple[str, ...]
    class_names: tuple[str, ...]
    n_distractors: int = 0
    distractor_glyphs: tuple[int, ...] = ()


def _glyph_ranges(arities: list[int]) -> list[tuple[int, ...]]:
    """Consecutive, disjoint glyph id ranges, one per reading (each reading's role is visible)."""
    out, start = [], 0
    for a in arities:
        out.append(tuple(range(start, start + a)))
        start += a
    return out


def parts_task(o: PartsOptions) -> Task:
    """Class y uniform; the framed glyph reads y (confused with y+1 w.p. ``noise_image``) among
    ``n_distractors`` unframed glyphs drawn uniformly from the same alphabet; one table column reads y
    (confused with y+2 w.p. ``noise_tabular``)."""
    c = o.n_classes
    y = np.arange(c)
    model = LatentModel(
        factors={"y": y}, prior=np.full(c, 1.0 / c), label=y, num_classes=c,
        readings=(Reading("part", "image", partner_channel(y, c, o.noise_image, 1)),
                  Reading("y_tab", "tabular", partner_channel(y, c, o.noise_tabular, 2))))
    glyphs = tuple(range(c))
    return Task("suite-parts", model, (ImagePart("part", glyphs, framed=True),), ("y_tab",),
                tuple(f"c{k}" for k in range(c)), o.n_distractors, glyphs)


def predict_task(o: PredictOptions) -> Task:
    """a uniform (image-specific), b = a w.p. ``coupling`` else uniform (table-specific); y = (a, b)."""
    k = o.n_values
    f = product_space({"a": k, "b": k})
    a, b = f["a"], f["b"]
    prior = (1.0 / k) * (o.coupling * (a == b) + (1.0 - o.coupling) / k)
    model = LatentModel(
        factors=f, prior=prior, label=a * k + b, num_classes=k * k,
        readings=(Reading("a_img", "image", symmetric_channel(a, k, o.noise_image)),
                  Reading("b_tab", "tabular", symmetric_channel(b, k, o.noise_tabular))))
    return Task("suite-predict", model, (ImagePart("a_img", tuple(range(k))),), ("b_tab",),
                tuple(f"a{i}b{j}" for i in range(k) for j in range(k)))


def imbalance_task(o: ImbalanceOptions) -> Task:
    """Class y uniform, read by one image glyph (confused with y+1 w.p. ``noise_image``) and one table
    column (confused with y+2 w.p. ``noise_tabular``)."""
    c = o.n_classes
    y = np.arange(c)
    model = LatentModel(
        factors={"y": y}, prior=np.full(c, 1.0 / c), label=y, num_classes=c,
        readings=(Reading("y_img", "image", partner_channel(y, c, o.noise_image, 1)),
                  Reading("y_tab", "tabular", partner_channel(y, c, o.noise_tabular, 2))))
    return Task("suite-imbalance", model, (ImagePart("y_img", tuple(range(c))),), ("y_tab",),
                tuple(f"c{k}" for k in range(c)))


def reliance_task(o: RelianceOptions) -> Task:
    """Class y uniform and a decider d (0 image, 1 table) with ``P(d=image | y) = reliance_image`` for the
    first half of the classes and ``1 - reliance_tabular`` for the second; the decider reads y (``noise``),
    the other modality shows a uniformly random class."""
    c = o.n_classes
    f = product_space({"y": c, "d": 2})
    y, d = f["y"], f["d"]
    p_image = np.where(y < c // 2, o.reliance_image, 1.0 - o.reliance_tabular)
    prior = (1.0 / c) * np.where(d == 0, p_image, 1.0 - p_image)
    informative = symmetric_channel(y, c, o.noise)
    noise = uniform_channel(len(y), c)
    model = LatentModel(
        factors=f, prior=prior, label=y, num_classes=c,
        readings=(Reading("y_img", "image", np.where((d == 0)[:, None], informative, noise)),
                  Reading("y_tab", "tabular", np.where((d == 1)[:, None], informative, noise))))
    names = tuple(f"{'img' if k < c // 2 else 'tab'}{k}" for k in range(c))
    return Task("suite-reliance", model, (ImagePart("y_img", tuple(range(c))),), ("y_tab",), names)


def interaction_task(o: InteractionOptions) -> Task:
    """Components of arity m: redundant r_j (read by both modalities), unique ui_j (image) and ut_j (table),
    synergy s_j = (xi_j + xt_j) mod m with xi_j read by the image and xt_j by the table. The class is
    the tuple (r, ui, ut, s) in mixed radix m (most significant first). Image readings have noise
    ``noise_image``, table readings ``noise_tabular``."""
    m = o.arity
    sizes: dict[str, int] = {}
    for kind, count in (("r", o.redundant), ("ui", o.unique_image), ("ut", o.unique_tabular),
                        ("xi", o.synergy), ("xt", o.synergy)):
        for j in range(count):
            sizes[f"{kind}{j}"] = m
    f = product_space(sizes)
    syn = {f"s{j}": (f[f"xi{j}"] + f[f"xt{j}"]) % m for j in range(o.synergy)}
    digits = ([f[f"r{j}"] for j in range(o.redundant)] + [f[f"ui{j}"] for j in range(o.unique_image)]
              + [f[f"ut{j}"] for j in range(o.unique_tabular)] + [syn[f"s{j}"] for j in range(o.synergy)])
    label = mixed_radix(digits, m)
    n_latent = len(label)

    def read(factor: str, modality: str) -> Reading:
        noise = o.noise_image if modality == "image" else o.noise_tabular
        return Reading(f"{factor}_{modality[:3]}", modality, symmetric_channel(f[factor], m, noise))

    image = ([read(f"r{j}", "image") for j in range(o.redundant)]
             + [read(f"ui{j}", "image") for j in range(o.unique_image)]
             + [read(f"xi{j}", "image") for j in range(o.synergy)])
    table = ([read(f"r{j}", "tabular") for j in range(o.redundant)]
             + [read(f"ut{j}", "tabular") for j in range(o.unique_tabular)]
             + [read(f"xt{j}", "tabular") for j in range(o.synergy)])
    model = LatentModel(factors={**f, **syn}, prior=np.full(n_latent, 1.0 / n_latent), label=label,
                        num_classes=m ** len(digits), readings=tuple(image + table))
    glyphs = _glyph_ranges([m] * len(image))
    parts = tuple(ImagePart(r.name, g) for r, g in zip(image, glyphs, strict=True))
    names = tuple(np.base_repr(k, m).zfill(len(digits)) for k in range(model.num_classes))
    return Task("suite-interaction", model, parts, tuple(r.name for r in table), names)


def shared_task(o: SharedOptions) -> Task:
    """Class y uniform, read by ``n_copies`` independent image glyphs (each with ``noise_image``, same
    alphabet, unframed, at random cells) and by one table column (``noise_tabular``)."""
    c = o.n_classes
    y = np.arange(c)
    copies = tuple(Reading(f"y_img{j}", "image", symmetric_channel(y, c, o.noise_image)) for j in range(o.n_copies))
    model = LatentModel(factors={"y": y}, prior=np.full(c, 1.0 / c), label=y, num_classes=c,
                        readings=(*copies, Reading("y_tab", "tabular", symmetric_channel(y, c, o.noise_tabular))))
    glyphs = tuple(range(c))
    return Task("suite-shared", model, tuple(ImagePart(r.name, glyphs) for r in copies), ("y_tab",),
                tuple(f"c{k}" for k in range(c)))


#: adapter name -> task builder
BUILDERS = {
    "suite-parts": parts_task,
    "suite-predict": predict_task,
    "suite-imbalance": imbalance_task,
    "suite-reliance": reliance_task,
    "suite-interaction": interaction_task,
    "suite-shared": shared_task,
}

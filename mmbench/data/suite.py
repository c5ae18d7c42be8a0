"""Adapters of the structured synthetic suite: procedural image + table tasks with exact Bayes posteriors.

Each adapter generates its task (:mod:`mmbench.data.suite_tasks`) from the card's options, renders the
readings (:mod:`mmbench.data.suite_render`) and returns train / val / test splits. Every split carries

* ``split.extra["bayes_posterior"]``: ``{"complete", "image_only", "tabular_only"}`` -> ``N x C`` float64,
  the exact posterior over classes given only what that missing pattern observes;
* ``split.extra["latents"]``: the true latent factors (``N`` integers each, the class as ``y``);
* ``split.extra["observations"]``: the readings the modalities show (``N`` integers each).

:meth:`SuiteDataset.ceiling` is the exact population Bayes accuracy per pattern. Each split is drawn
from its own stream of ``SeedSequence([seed, task salt, split])``, so the test rows depend only on
``(seed, n_test)``. ``docs/synthetic-suite.md`` documents the tasks, their knobs and claims.
"""

from __future__ import annotations

import zlib
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import register_dataset
from .base import SPLITS, DataInfo, DatasetAdapter, Split, TabularSchema
from .suite_options import (
    ImbalanceOptions,
    InteractionOptions,
    PartsOptions,
    PredictOptions,
    RelianceOptions,
    SharedOptions,
    SuiteOptions,
)
from .suite_render import CELL, build_table, layout_cells, render_cells
from .suite_tasks import BUILDERS, Task


def _stream(seed: int, name: str, split: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode()), SPLITS.index(split)]))


class SuiteDataset(DatasetAdapter):
    """Base adapter of the suite; a subclass names its task (``task_name``) and its ``Options``."""

    Options: ClassVar[type] = SuiteOptions
    options: Any
    version: ClassVar[int] = 1
    task_name: ClassVar[str] = ""

    def task(self) -> Task:
        """The task's latent model and layout from the options."""
        return BUILDERS[self.task_name](self.options)

    def _seed(self) -> int:
        seed = self.options.seed
        if seed == "run":
            raise ConfigError(f"{self.task_name}: options.seed is 'run' but no run seed was bound (the spec "
                              "builder binds it with mmbench.data.suite_options.bind_run_seed); pass a number "
                              "with --set data.seed=N")
        return int(seed)

    def generate(self, split: str) -> dict[str, Any]:
        """Draw one split: readings, latents, exact posteriors, rendered images and table (deterministic)."""
        o, task = self.options, self.task()
        n = {"train": o.n_train, "val": o.n_val, "test": o.n_test}[split]
        rng = _stream(self._seed(), self.task_name, split)
        u, obs = task.model.sample(n, rng)
        cells, framed = layout_cells(task, obs, o.grid, rng)
        images = render_cells(cells, framed, o.grid, rng, o.pixel_noise)
        cat, num = build_table(task, obs, rng, o.n_nuisance_num, o.n_nuisance_cat)
        return {"images": images, "cat": cat, "num": num, "y": task.model.label[u].astype(np.int64),
                "latents": task.model.latents(u), "observations": obs,
                "bayes_posterior": task.model.posteriors(obs), "cells": cells, "framed": framed}

    def info(self) -> DataInfo:
        """Classes, image shape and table schema of the task."""
        o, task = self.options, self.task()
        cards = [task.model.reading(c).arity for c in task.columns]
        schema = TabularSchema(
            cat_cardinalities=(*cards, *([4] * o.n_nuisance_cat)),
            n_num=len(task.columns) + o.n_nuisance_num,
            cat_names=(*task.columns, *[f"nuisance_cat_{k}" for k in range(o.n_nuisance_cat)]),
            num_names=(*[f"{c}_code" for c in task.columns], *[f"nuisance_{k}" for k in range(o.n_nuisance_num)]),
        )
        size = CELL * o.grid
        return DataInfo(name=self.task_name, task="multiclass", num_classes=task.model.num_classes,
                        image_shape=(3, size, size), tabular=schema, class_names=task.class_names,
                        primary_metric="accuracy")

    def load(self) -> tuple[DataInfo, dict[str, Split]]:
        """Generate the three splits; images are normalised with the training split's channel statistics."""
        arrays = {name: self.generate(name) for name in SPLITS}
        train = arrays["train"]["images"].astype(np.float64) / 255.0
        mean = torch.tensor(train.mean(axis=(0, 2, 3)), dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(train.std(axis=(0, 2, 3)), dtype=torch.float32).view(3, 1, 1)
        splits = {}
        for name, arr in arrays.items():
            n = len(arr["y"])
            splits[name] = Split(
                inputs={"image": {"pixels": torch.from_numpy(arr["images"])},
                        "tabular": {"cat": torch.from_numpy(arr["cat"]), "num": torch.from_numpy(arr["num"])}},
                y=torch.from_numpy(arr["y"]),
                natural_present=torch.ones(n, 2, dtype=torch.bool),
                image_mean=mean, image_std=std,
                extra={"bayes_posterior": arr["bayes_posterior"], "latents": arr["latents"],
                       "observations": arr["observations"]},
            )
        return self.info(), splits

    def ceiling(self) -> dict[str, float]:
        """Exact population Bayes accuracy per missing pattern (enumeration over the readings)."""
        return self.task().model.ceilings()


@register_dataset("suite-parts")
class PartsDataset(SuiteDataset):
    """Token-level parts: the class glyph is the framed cell among unframed distractor glyphs."""

    Options = PartsOptions
    task_name = "suite-parts"


@register_dataset("suite-predict")
class PredictDataset(SuiteDataset):
    """Cross-modal predictability: image- and table-specific factors coupled by ``coupling``."""

    Options = PredictOptions
    task_name = "suite-predict"


@register_dataset("suite-imbalance")
class ImbalanceDataset(SuiteDataset):
    """Modality imbalance: the same class through a clean table and a noisy image."""

    Options = ImbalanceOptions
    task_name = "suite-imbalance"


@register_dataset("suite-reliance")
class RelianceDataset(SuiteDataset):
    """Class-dependent modality reliance: half the classes are decided by the image, half by the table."""

    Options = RelianceOptions
    task_name = "suite-reliance"


@register_dataset("suite-interaction")
class InteractionDataset(SuiteDataset):
    """Redundant, unique and synergistic (cross-modal XOR) components of the class."""

    Options = InteractionOptions
    task_name = "suite-interaction"


@register_dataset("suite-shared")
class SharedDataset(SuiteDataset):
    """A shared factor shown by several image glyphs and one table column (no one-to-one counterpart)."""

    Options = SharedOptions
    task_name = "suite-shared"

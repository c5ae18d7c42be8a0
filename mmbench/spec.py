"""The frozen, typed specification of one run, and its hash (the run id).

A :class:`RunSpec` holds everything that determines a run's numbers: the method, head and balancer
(each with its registered implementation's behaviour ``version`` and typed params), the dataset
(adapter, its ``version`` and typed options), the encoders, the missingness cell, the training
settings and the regime that resolved them (``fair`` / ``paper``), the seeds, the record schema and
the mmbench version. Its canonical JSON is the tree the
run record stores under ``spec``, and the first 16 hex digits of its sha256 are the run id: the same
spec gives the same id in any process, and any change (including a code version) gives a new one.

The ``--set`` keys mirror this tree: ``method.params.K``, ``head.params.supcon_weight``,
``dataset.options.n_samples``, ``encoders.image.name``, ``train.epochs`` (with the short forms
``params.K``, ``head.supcon_weight``, ``data.n_samples``, documented in :mod:`mmbench.config`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from . import __version__
from .encoders.config import EncodersConfig
from .protocols import MissingSpec
from .registry import BALANCERS, DATASETS, ENCODERS, HEADS, METHODS
from .typed import dump, validate

#: Version of the run-record schema (records of a newer schema are refused, older ones migrated).
SCHEMA_VERSION = 2

#: The seed fields of a spec: tables pool runs whose specs differ only in these.
SEED_FIELDS: tuple[str, ...] = ("train_seed", "sim_seed")


@dataclasses.dataclass(frozen=True)
class Component:
    """A registered method, head or balancer as run: config name, implementation, version, params."""

    name: str
    impl: str
    version: int
    params: Any


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """The dataset of a run: card name, adapter (and its version), task, metric, width, options."""

    name: str
    adapter: str
    version: int
    task: str
    primary_metric: str
    hidden: int
    options: Any
    augment: Any = None  # mmbench.data.augment_config.AugmentConfig, or None: no training-time augmentation


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run; :attr:`run_id` is the hash of :meth:`to_dict`."""

    method: Component
    head: Component
    balancer: Component
    dataset: DatasetSpec
    encoders: EncodersConfig
    missing: MissingSpec
    train: Any  # mmbench.config.TrainConfig
    train_seed: int
    sim_seed: int
    regime: str = "fair"  # mmbench.regime.REGIMES: fair (one budget for every method) or paper
    schema_version: int = SCHEMA_VERSION
    mmbench_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON tree records store (and the hash covers)."""
        return {
            "method": dump(self.method), "head": _component_dict(self.head),
            "balancer": _component_dict(self.balancer), "dataset": dump(self.dataset),
            "encoders": dump(self.encoders), "missing": dump(self.missing), "train": dump(self.train),
            "train_seed": self.train_seed, "sim_seed": self.sim_seed, "regime": self.regime,
            "schema_version": self.schema_version, "mmbench_version": self.mmbench_version,
        }

    @property
    def run_id(self) -> str:
        """Stable 16-hex-digit hash of the canonical JSON of the spec."""
        return spec_hash(self.to_dict())

    @property
    def data_options(self) -> Any:
        """The dataset options the adapter is built with: a ``seed: run`` bound to the run's seed. The
        spec keeps ``run`` (so the seeds of one experiment pool in tables); the data is drawn from it."""
        from .data.suite_options import bind_run_seed

        return bind_run_seed(self.dataset.options, self.train_seed)

    @property
    def label(self) -> str:
        """Table label of the run's method: the config name, plus ``+head`` / ``+balancer`` when they
        were set on top of it (``--head dpl`` on ``shaspec`` -> ``shaspec+dpl``), so variants never merge."""
        label = self.method.name
        for part, default in ((self.head.name, "native"), (self.balancer.name, "none")):
            if part != default and f"+{part}" not in label:
                label += f"+{part}"
        return label

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        """Inverse of :meth:`to_dict` (params, options and encoders re-typed through the registries)."""
        from .config import TrainConfig
        from .data.augment_config import AugmentConfig

        m, h, b, ds = d["method"], d["head"], d["balancer"], d["dataset"]
        enc = {mod: validate(ENCODERS.config(raw["kind"]), raw, f"spec.encoders.{mod}")
               for mod, raw in d["encoders"].items() if mod != "freeze"}
        augment = ds.get("augment")
        missing = d["missing"]
        return cls(
            method=Component(m["name"], m["impl"], int(m["version"]),
                             validate(METHODS.config(m["impl"]), m["params"], "spec.method.params")),
            head=Component(h["name"], h["name"], int(h["version"]),
                           validate(HEADS.config(h["name"]), h["params"], "spec.head.params")),
            balancer=Component(b["name"], b["name"], int(b["version"]),
                               validate(BALANCERS.config(b["name"]), b["params"], "spec.balancer.params")),
            dataset=DatasetSpec(ds["name"], ds["adapter"], int(ds["version"]), ds["task"], ds["primary_metric"],
                                int(ds["hidden"]),
                                validate(DATASETS.config(ds["adapter"]), ds["options"], "spec.dataset.options"),
                                None if augment is None else validate(AugmentConfig, augment, "spec.dataset.augment")),
            encoders=EncodersConfig(**enc, freeze=bool(d["encoders"].get("freeze", False))),
            missing=MissingSpec(missing["scenario"], missing["rate"], dict(missing["rates"]), missing["test_rate"],
                                None if missing["test_rates"] is None else dict(missing["test_rates"])),
            train=validate(TrainConfig, d["train"], "spec.train"),
            train_seed=int(d["train_seed"]), sim_seed=int(d["sim_seed"]), regime=str(d.get("regime", "fair")),
            schema_version=int(d["schema_version"]), mmbench_version=str(d["mmbench_version"]),
        )

    def cell_name(self) -> str:
        """The missingness cell as a file-name part: ``both-r0.5``, ``image-r0.3-t0.9``, ``none``."""
        m = self.missing
        if m.scenario == "imbalanced":
            rates = "-".join(f"{k[0]}{v:g}" for k, v in sorted(m.rates.items()))
            test = "" if m.test_rates is None else "-t" + "-".join(
                f"{k[0]}{v:g}" for k, v in sorted(m.test_rates.items()))
            return f"imbalanced-{rates}{test}"
        if m.scenario == "none":
            return "none"
        return f"{m.scenario}-r{m.rate:g}" + ("" if m.test_rate is None else f"-t{m.test_rate:g}")

    def short_name(self) -> str:
        """Human-readable file stem: ``both-r0.5-t0.5-s0-<hash8>``."""
        return f"{self.cell_name()}-s{self.train_seed}-{self.run_id[:8]}"

    def with_missing(self, missing: MissingSpec) -> RunSpec:
        """The same spec on another missingness cell."""
        return dataclasses.replace(self, missing=missing)

    def training_spec(self) -> RunSpec:
        """The spec of the training this run evaluates: the same spec with its test-time missingness
        (``missing.test_rate`` / ``missing.test_rates``) reset, since only the test split depends on it."""
        return self.with_missing(dataclasses.replace(self.missing, test_rate=None, test_rates=None))

    @property
    def training_id(self) -> str:
        """Hash of :meth:`training_spec`: runs with equal ids share one training (a test-rate sweep)."""
        return spec_hash(self.training_spec().to_dict())


def _component_dict(c: Component) -> dict[str, Any]:
    return {"name": c.name, "version": c.version, "params": dump(c.params)}


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal for equal specs in any process or dict order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def spec_hash(d: dict[str, Any]) -> str:
    """sha256 of :func:`canonical_json`, first 16 hex digits."""
    return hashlib.sha256(canonical_json(d).encode()).hexdigest()[:16]


def pooling_key(spec_tree: dict[str, Any]) -> str:
    """Hash of a spec tree without its seeds: runs with equal keys are seeds of one experiment."""
    return spec_hash({k: v for k, v in spec_tree.items() if k not in SEED_FIELDS})

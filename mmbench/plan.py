"""Grid planning: what ``mmbench run`` will run, decided before anything runs.

A :class:`GridRequest` holds what the user asked for (flags or a protocol); :func:`build_plan`
expands it into a :class:`Plan` of resolved :class:`~mmbench.spec.RunSpec` cells, checking every
input that can be checked up front (names, rates, seeds, overrides, devices, the size of the grid),
so bad input fails in one line before any file is written. A plan groups its cells into *units*
of work: cells that share one training (they differ only in test-time missingness) form one unit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import MAX_EXPANSION, load_protocol, parse_seeds, parse_set, resolve
from .errors import ConfigError
from .protocols import MissingSpec
from .records import existing_ok, record_path, superseded, version_change
from .regime import DEFAULT_REGIME
from .spec import RunSpec


@dataclass
class GridRequest:
    """The grid as the user asked for it (``mmbench run`` flags)."""

    methods: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    scenario: str | None = None
    rate: float | None = None
    test_rate: float | None = None
    rates: dict[str, float] | None = None
    test_rates: dict[str, float] | None = None
    seeds: str | None = None
    sim_seed: int | None = None
    protocol: str | None = None
    head: str | None = None
    balancer: str | None = None
    set: list[str] = field(default_factory=list)
    config_dir: list[str] | None = None
    regime: str | None = None  # None: the protocol's regime:, else fair


@dataclass
class Plan:
    """Resolved cells in run order, and the protocol they came from."""

    specs: list[RunSpec]
    protocol: str | None = None

    def units(self) -> list[list[int]]:
        """Indices of the cells trained together, in order of their first cell: cells with one
        :attr:`~mmbench.spec.RunSpec.training_id` (they differ only in test-time missingness) share
        one training, which is evaluated once per cell."""
        groups: dict[str, list[int]] = {}
        for i, spec in enumerate(self.specs):
            groups.setdefault(spec.training_id, []).append(i)
        return list(groups.values())

    def __len__(self) -> int:
        return len(self.specs)


def parse_rates(text: str | None, flag: str) -> dict[str, float] | None:
    """``image=0.5,tabular=0.1`` -> ``{"image": 0.5, "tabular": 0.1}``."""
    if text is None:
        return None
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[k.strip()] = float(v)
        except ValueError:
            raise ConfigError(f"{flag} {text!r}: expected modality=rate pairs like image=0.5,tabular=0.1") from None
    return out


def _cells(req: GridRequest) -> tuple[list[MissingSpec], list[str], list[str], list[int], dict[str, Any], str | None]:
    overrides = parse_set(req.set)
    if req.head is not None:
        overrides["head"] = req.head
    if req.balancer is not None:
        overrides["balancer"] = req.balancer
    if req.protocol:
        proto = load_protocol(req.protocol, req.config_dir)
        if req.scenario or req.rate is not None or req.rates:
            raise ConfigError("--protocol and --scenario/--rate/--rates are exclusive: the protocol defines the cells")
        cells = proto.cells()
        if req.test_rate is not None or req.test_rates is not None:
            cells = [dataclasses.replace(c, test_rate=req.test_rate if c.scenario != "imbalanced" else None,
                                         test_rates=req.test_rates if c.scenario == "imbalanced" else None)
                     if c.scenario != "none" else c for c in cells]
        seeds = parse_seeds(req.seeds) if req.seeds else list(proto.seeds)
        return (cells, req.methods or list(proto.methods), req.datasets or list(proto.datasets), seeds,
                {**proto.set, **overrides}, proto.name)
    sc = req.scenario or ("imbalanced" if req.rates else "both")
    if sc == "imbalanced" and not req.rates:
        raise ConfigError("--scenario imbalanced needs --rates image=R1,tabular=R2")
    if sc != "imbalanced" and req.rates:
        raise ConfigError(f"--rates is for --scenario imbalanced, not {sc!r}; use --rate")
    if sc != "imbalanced" and req.test_rates:
        raise ConfigError(f"--test-rates is for --scenario imbalanced, not {sc!r}; use --test-rate")
    if sc == "imbalanced" and (req.rate is not None or req.test_rate is not None):
        raise ConfigError("--scenario imbalanced takes --rates/--test-rates (one per modality), not --rate/--test-rate")
    if sc == "none" and (req.rate not in (None, 0.0) or req.test_rate not in (None, 0.0)):
        raise ConfigError("--scenario none keeps every modality: it takes no --rate or --test-rate")
    rate = 0.0 if sc in ("none", "imbalanced") else (0.5 if req.rate is None else req.rate)
    cell = MissingSpec(sc, rate, req.rates or {}, None if sc == "none" else req.test_rate, req.test_rates)
    seeds = parse_seeds(req.seeds if req.seeds is not None else "0")
    return [cell], list(req.methods), list(req.datasets), seeds, overrides, None


def check_device(device: str) -> None:
    """A device the run cannot use fails before planning (``cuda:7`` on a machine with 1 GPU)."""
    if device in ("auto", "cpu"):
        return
    import torch

    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= n:
            raise ConfigError(f"train.device {device!r}: this machine has {n} CUDA device(s)"
                              + (f" (valid: cuda:0..cuda:{n - 1})" if n else "; use cpu or auto"))
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device 'mps': not available on this machine; use cpu or auto")


def build_plan(req: GridRequest) -> Plan:
    """Expand and resolve the grid (every cell checked; nothing written)."""
    cells, methods, datasets, seeds, overrides, proto = _cells(req)
    if not methods:
        raise ConfigError("no method given: pass --method NAME (see `mmbench ls methods`)")
    if not datasets:
        raise ConfigError("no dataset given: pass --dataset NAME (see `mmbench ls datasets`)")
    n = len(datasets) * len(methods) * len(cells) * len(seeds)
    if n > MAX_EXPANSION:
        raise ConfigError(f"the grid has {n} runs ({len(methods)} method(s) x {len(datasets)} dataset(s) x "
                          f"{len(cells)} cell(s) x {len(seeds)} seed(s)), more than the {MAX_EXPANSION} one "
                          "command may plan; split it")
    regime = req.regime or (load_protocol(req.protocol, req.config_dir).regime if req.protocol else DEFAULT_REGIME)
    specs = [resolve(m, d, cell, s, overrides=overrides, sim_seed=req.sim_seed, config_dir=req.config_dir,
                     regime=regime)
             for d in datasets for m in methods for cell in cells for s in seeds]
    for device in sorted({s.train.device for s in specs}):
        check_device(device)
    return Plan(specs, proto)


@dataclass
class Status:
    """Which planned cells are done, and which will re-run because older code made their records."""

    done: list[bool]
    superseded: dict[int, str]  # cell index -> "dfpl v1 -> v2 (path)"


def plan_status(plan: Plan, output_dir: Path, force: bool) -> Status:
    """Done cells (an ``ok`` record of the same run id) and cells whose records are from older code."""
    done, old = [], {}
    for i, spec in enumerate(plan.specs):
        path = record_path(output_dir, spec)
        ok = not force and existing_ok(path, spec.run_id) is not None
        done.append(ok)
        if not ok:
            prev = superseded(path, spec.to_dict())
            if prev:
                old[i] = f"{version_change(prev[-1][1].spec, spec.to_dict())} ({prev[-1][0].name})"
    return Status(done, old)

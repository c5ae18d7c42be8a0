"""YAML configs -> typed objects -> a frozen, hashed :class:`RunSpec`.

Precedence (dinov2 style): code defaults < dataset card ``train:`` < method YAML ``train:`` <
protocol ``set:`` < CLI ``--set key=value``. The fully resolved spec is saved in every record and
its canonical-JSON hash is the run id, so the same spec gives the same id in any process.

Config folders: the packaged ``mmbench/configs/{methods,datasets,protocols}`` (the top-level
``methods/``, ``datasets/``, ``protocols/`` of the repository), with user folders given by
``--config-dir`` searched first (each holding ``methods/``, ``datasets/``, ``protocols/``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from . import __version__
from .encoders.config import EncodersConfig
from .errors import ConfigError
from .protocols import MissingSpec
from .registry import BALANCERS, DATASETS, ENCODERS, HEADS, METHODS
from .typed import from_dict, to_dict

SCHEMA_VERSION = 1
PACKAGE_CONFIGS = Path(__file__).parent / "configs"
KINDS = ("methods", "datasets", "protocols")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, early stopping and device settings of one run."""

    epochs: int = 20
    batch_size: int = 64
    eval_batch_size: int = 256
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = 0
    patience: int = 5
    min_epochs: int = 1
    grad_clip: float = 1.0
    device: str = "auto"
    amp: bool = True
    num_threads: int = 0
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class MethodConfig:
    """A ``methods/<name>.yaml`` file."""

    name: str
    impl: str
    cite: str = ""
    description: str = ""
    notes: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    head: str = "native"
    head_params: dict[str, Any] = field(default_factory=dict)
    balancer: str = "none"
    balancer_params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetCard:
    """A ``datasets/<name>.yaml`` dataset card."""

    name: str
    adapter: str
    description: str = ""
    cite: str = ""
    source: str = ""
    notes: str = ""
    task: Literal["multiclass", "binary", "multilabel"] = "multiclass"
    primary_metric: Literal["accuracy", "macro_f1", "auroc", "prauc"] = "accuracy"
    hidden: int = 64
    encoders: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProtocolConfig:
    """A ``protocols/<name>.yaml`` grid: methods x datasets x scenarios x rates x test rates x seeds."""

    name: str
    description: str = ""
    cite: str = ""
    methods: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    scenarios: list[str] = field(default_factory=lambda: ["none"])
    rates: list[Any] = field(default_factory=lambda: [0.0])
    test_rates: list[Any] | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    set: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[MissingSpec]:
        """Every missingness cell of the grid (``none`` contributes a single cell)."""
        out: list[MissingSpec] = []
        for sc in self.scenarios:
            if sc == "none":
                out.append(MissingSpec("none"))
                continue
            for r in self.rates:
                for tr in self.test_rates or [None]:
                    if sc == "imbalanced":
                        if not isinstance(r, dict) or (tr is not None and not isinstance(tr, dict)):
                            raise ConfigError(f"protocols/{self.name}.yaml: imbalanced rates must be mappings "
                                              "like {image: 0.5, tabular: 0.1}")
                        out.append(MissingSpec(sc, 0.0, dict(r), None, None if tr is None else dict(tr)))
                    else:
                        if isinstance(r, dict) or isinstance(tr, dict):
                            raise ConfigError(f"protocols/{self.name}.yaml: scenario {sc!r} takes numeric rates")
                        out.append(MissingSpec(sc, float(r), {}, None if tr is None else float(tr)))
        return out


# --------------------------------------------------------------------------------------------- files
def config_dirs(extra: list[str] | tuple[str, ...] | None = None) -> list[Path]:
    """User folders (first) then the packaged folder."""
    dirs = [Path(d) for d in (extra or [])]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"--config-dir {d}: not a directory (expected a folder with methods/, "
                              "datasets/ and/or protocols/)")
    return [*dirs, PACKAGE_CONFIGS]


def list_names(kind: str, extra: list[str] | None = None) -> list[str]:
    """All config names of ``kind`` (``methods`` / ``datasets`` / ``protocols``)."""
    names: set[str] = set()
    for d in config_dirs(extra):
        names.update(p.stem for p in (d / kind).glob("*.yaml"))
    return sorted(names)


def find_config(kind: str, name: str, extra: list[str] | None = None) -> Path:
    """Path of ``<kind>/<name>.yaml`` (a path to an existing file is accepted too)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for d in config_dirs(extra):
        cand = d / kind / f"{name}.yaml"
        if cand.is_file():
            return cand
    import difflib

    known = list_names(kind, extra)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    singular = kind[:-1]
    raise ConfigError(f"unknown {singular} {name!r}{hint} (known: {', '.join(known)}; "
                      f"add {kind}/{name}.yaml or use --config-dir)")


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, resolving ``include:`` (a sibling file name or path) recursively."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: include cycle through {' -> '.join(str(p) for p in _seen)}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    inc = data.pop("include", None)
    if inc is None:
        return data
    incs = inc if isinstance(inc, list) else [inc]
    merged: dict[str, Any] = {}
    for name in incs:
        ip = path.parent / str(name)
        if not ip.suffix:
            ip = ip.with_suffix(".yaml")
        if not ip.is_file():
            raise ConfigError(f"{path}: include {name!r} not found (looked for {ip})")
        merged = _deep_merge(merged, load_yaml(ip, (*_seen, path.resolve())))
    return _deep_merge(merged, data)


def _where(path: Path) -> str:
    try:
        return str(path.relative_to(PACKAGE_CONFIGS))
    except ValueError:
        return str(path)


def load_method(name: str, extra: list[str] | None = None) -> MethodConfig:
    """Load and validate ``methods/<name>.yaml`` (params against the method's ``Config``)."""
    path = find_config("methods", name, extra)
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    where = _where(path)
    if "impl" not in data:
        raise ConfigError(f"{where}: missing key 'impl' (the registered method name)")
    mc = from_dict(MethodConfig, data, where)
    validate_method_parts(mc, where)
    return mc


def validate_method_parts(mc: MethodConfig, where: str) -> dict[str, Any]:
    """Check impl/head/balancer names and their params; return their typed configs."""
    cls = METHODS.get(mc.impl)
    typed = {
        "params": from_dict(cls.Config, mc.params, f"{where}: params"),
        "head_params": from_dict(HEADS.get(mc.head).Config, mc.head_params, f"{where}: head_params"),
        "balancer_params": from_dict(BALANCERS.get(mc.balancer).Config, mc.balancer_params,
                                     f"{where}: balancer_params"),
    }
    from_dict(TrainConfig, mc.train, f"{where}: train")
    if mc.head != "native" and not getattr(cls, "supports_heads", True):
        raise ConfigError(f"{where}: method {mc.impl!r} cannot take head {mc.head!r} (it exposes no "
                          "per-modality embeddings a head could use); use head: native")
    return typed


def load_dataset(name: str, extra: list[str] | None = None) -> DatasetCard:
    """Load and validate ``datasets/<name>.yaml`` (options against the adapter's ``Options``)."""
    path = find_config("datasets", name, extra)
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    where = _where(path)
    if "adapter" not in data:
        raise ConfigError(f"{where}: missing key 'adapter' (the registered dataset adapter)")
    card = from_dict(DatasetCard, data, where)
    adapter_options(card, where)
    encoders_config(card, where)
    from_dict(TrainConfig, card.train, f"{where}: train")
    return card


def adapter_options(card: DatasetCard, where: str | None = None) -> Any:
    """The card's ``options`` as the adapter's typed ``Options``."""
    cls = DATASETS.get(card.adapter)
    return from_dict(cls.Options, card.options, f"{where or 'datasets/' + card.name + '.yaml'}: options")


def encoders_config(card: DatasetCard, where: str | None = None) -> EncodersConfig:
    """The card's ``encoders`` block, each entry typed by its encoder kind's ``Config``."""
    where = where or f"datasets/{card.name}.yaml"
    parts = {}
    unknown = set(card.encoders) - {"image", "tabular"}
    if unknown:
        raise ConfigError(f"{where}: encoders: unknown modality {sorted(unknown)[0]!r}; expected image, tabular")
    defaults = EncodersConfig()
    for mod in ("image", "tabular"):
        raw = dict(card.encoders.get(mod) or {})
        kind = raw.get("kind", getattr(defaults, mod).kind)
        try:
            cfg_cls = getattr(ENCODERS.get(kind), "Config", None)
        except ConfigError as exc:
            raise ConfigError(f"{where}: encoders.{mod}: {exc}") from None
        if cfg_cls is None:
            raise ConfigError(f"{where}: encoders.{mod}: encoder kind {kind!r} has no Config")
        raw["kind"] = kind
        parts[mod] = from_dict(cfg_cls, raw, f"{where}: encoders.{mod}")
    return EncodersConfig(**parts)


def load_protocol(name: str, extra: list[str] | None = None) -> ProtocolConfig:
    """Load and validate ``protocols/<name>.yaml``; its cells are checked eagerly."""
    path = find_config("protocols", name, extra)
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    proto = from_dict(ProtocolConfig, data, _where(path))
    try:
        proto.cells()
    except ConfigError as exc:
        raise ConfigError(f"{_where(path)}: {exc}") from None
    return proto


# ---------------------------------------------------------------------------------------- overrides
def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["train.epochs=3", "head=dpl"]`` -> ``{"train.epochs": 3, "head": "dpl"}`` (values are YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. train.epochs=5)")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


SET_PREFIXES = ("train.", "params.", "method.", "head.", "balancer.", "data.", "encoders.")


def _apply_overrides(mc: dict, card: dict, train: dict, overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if key in ("head", "balancer"):
            if not isinstance(value, str):
                raise ConfigError(f"--set {key}=...: expected a registered {key} name")
            if mc.get(key) != value:
                mc[f"{key}_params"] = {}
            mc[key] = value
        elif key == "hidden":
            card["hidden"] = value
        elif key.startswith("train."):
            train[key[6:]] = value
        elif key.startswith(("params.", "method.")):
            mc.setdefault("params", {})[key.split(".", 1)[1]] = value
        elif key.startswith("head."):
            mc.setdefault("head_params", {})[key[5:]] = value
        elif key.startswith("balancer."):
            mc.setdefault("balancer_params", {})[key[9:]] = value
        elif key.startswith("data."):
            card.setdefault("options", {})[key[5:]] = value
        elif key.startswith("encoders."):
            parts = key.split(".")
            if len(parts) != 3:
                raise ConfigError(f"--set {key}: expected encoders.<image|tabular>.<field>")
            card.setdefault("encoders", {}).setdefault(parts[1], {})[parts[2]] = value
        else:
            raise ConfigError(f"--set {key}: unknown key; expected head, balancer, hidden or a key starting "
                              f"with {', '.join(SET_PREFIXES)}")


# ------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run; ``run_id`` is the hash of its canonical JSON."""

    method: dict[str, Any]
    dataset: dict[str, Any]
    missing: dict[str, Any]
    sim_seed: int
    train_seed: int
    train: dict[str, Any]
    schema_version: int = SCHEMA_VERSION
    mmbench_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what records store and the hash covers)."""
        return to_dict(self)

    @property
    def run_id(self) -> str:
        """Stable 16-hex-digit hash of the canonical JSON of the spec."""
        return spec_hash(self.to_dict())

    @property
    def missing_spec(self) -> MissingSpec:
        """The missingness cell as a :class:`MissingSpec`."""
        return MissingSpec(**self.missing)

    @property
    def train_config(self) -> TrainConfig:
        """The typed training config."""
        return from_dict(TrainConfig, self.train, "spec.train")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)

    def short_name(self) -> str:
        """Human-readable file stem: ``both-r0.5-t0.5-s0-<hash8>``."""
        m = self.missing_spec
        if m.scenario == "imbalanced":
            rates = "-".join(f"{k[0]}{v:g}" for k, v in sorted(m.rates.items()))
            test = "" if m.test_rates is None else "-t" + "-".join(
                f"{k[0]}{v:g}" for k, v in sorted(m.test_rates.items()))
            cell = f"imbalanced-{rates}{test}"
        elif m.scenario == "none":
            cell = "none"
        else:
            cell = f"{m.scenario}-r{m.rate:g}" + ("" if m.test_rate is None else f"-t{m.test_rate:g}")
        return f"{cell}-s{self.train_seed}-{self.run_id[:8]}"


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal for equal specs in any process or dict order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def spec_hash(d: dict[str, Any]) -> str:
    """sha256 of :func:`canonical_json`, first 16 hex digits."""
    return hashlib.sha256(canonical_json(d).encode()).hexdigest()[:16]


def resolve(method: str, dataset: str, missing: MissingSpec, seed: int, *,
            overrides: dict[str, Any] | None = None, sim_seed: int | None = None,
            config_dir: list[str] | None = None) -> RunSpec:
    """Merge method YAML, dataset card, overrides and the cell into a validated :class:`RunSpec`."""
    mc = load_method(method, config_dir)
    card = load_dataset(dataset, config_dir)
    mc_d, card_d = to_dict(mc), to_dict(card)
    train = _deep_merge(dict(card.train), dict(mc.train))
    _apply_overrides(mc_d, card_d, train, overrides or {})
    where = "--set"
    mc2 = from_dict(MethodConfig, mc_d, where)
    typed = validate_method_parts(mc2, f"methods/{mc2.name}.yaml with --set")
    card2 = from_dict(DatasetCard, card_d, where)
    options = adapter_options(card2, f"datasets/{card2.name}.yaml with --set")
    enc = encoders_config(card2, f"datasets/{card2.name}.yaml with --set")
    tcfg = from_dict(TrainConfig, train, "train (card < method < --set)")
    return RunSpec(
        method={"name": mc2.name, "impl": mc2.impl, "params": to_dict(typed["params"]),
                "head": mc2.head, "head_params": to_dict(typed["head_params"]),
                "balancer": mc2.balancer, "balancer_params": to_dict(typed["balancer_params"])},
        dataset={"name": card2.name, "adapter": card2.adapter, "task": card2.task,
                 "primary_metric": card2.primary_metric, "hidden": card2.hidden,
                 "encoders": to_dict(enc), "options": to_dict(options)},
        missing=to_dict(missing),
        sim_seed=int(seed if sim_seed is None else sim_seed),
        train_seed=int(seed),
        train=to_dict(tcfg),
    )


def with_missing(spec: RunSpec, missing: MissingSpec) -> RunSpec:
    """The same spec on another missingness cell."""
    return replace(spec, missing=to_dict(missing))


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0..4], ``"0,2,5"`` -> [0, 2, 5], ``"3"`` -> [3]."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected a seed range like 0-4, a list like 0,2,5 "
                          "or a single seed") from None
    if any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds {text!r}: seeds must be >= 0")
    return list(dict.fromkeys(seeds))

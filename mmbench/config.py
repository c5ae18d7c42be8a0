"""YAML configs -> typed objects -> a frozen, hashed :class:`~mmbench.spec.RunSpec`.

Precedence (dinov2 style): ``configs/defaults.yaml`` < dataset card ``train:`` < (``--regime paper``
only) the method YAML's ``paper:`` block < protocol ``set:`` < CLI ``--set key=value``; a method YAML
cannot set ``train:`` (:mod:`mmbench.regime`, docs/training.md). A head or balancer named by a
method YAML, ``--head``, ``--balancer`` or ``--set head=...`` starts from its own ``heads/<name>.yaml`` /
``balancers/<name>.yaml`` (the paper's values), then the method YAML's ``head_params`` /
``balancer_params`` for that same component, then ``--set head.params.X=...`` — in that order,
whatever the order of the flags.

``--set`` keys mirror the spec tree the record stores (:mod:`mmbench.spec`):

==============================  ==========================================
canonical key                   short form
==============================  ==========================================
``method.params.X``             ``params.X``, ``method.X``
``head.name`` / ``head.params.X``  ``head=NAME`` / ``head.X``
``balancer.name`` / ``...params.X``  ``balancer=NAME`` / ``balancer.X``
``dataset.options.X``           ``data.X``
``dataset.hidden``              ``hidden``
``dataset.augment`` / ``...augment.X``  (``dataset.augment=null``: none)
``encoders.<image|tabular>.X``
``encoders.freeze``
``train.X``
``train.stages.<stage>.X``       (a stage of a multi-stage method)
==============================  ==========================================

Values are YAML with the YAML 1.2 number rule (``1e-3`` is a number). Config folders: the packaged
``mmbench/configs/{methods,datasets,protocols,heads,balancers}`` (the repository's top-level folders
of those names), with user folders given by ``--config-dir`` searched first.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field

from .encoders.config import EncodersConfig
from .errors import ConfigError
from .protocols import MissingSpec
from .regime import DEFAULT_REGIME, FairRule, PaperRecipe, Regime, apply_budget, check_regime, trainer_defaults
from .registry import BALANCERS, DATASETS, ENCODERS, HEADS, METHODS
from .spec import SCHEMA_VERSION, Component, DatasetSpec, RunSpec, canonical_json, spec_hash
from .typed import Bool, NonNegFloat, NonNegInt, PosFloat, PosInt, config, dump, validate

__all__ = ["SCHEMA_VERSION", "RunSpec", "TrainConfig", "canonical_json", "load_dataset", "load_method",
           "load_protocol", "parse_seeds", "parse_set", "resolve", "spec_hash"]

PACKAGE_CONFIGS = Path(__file__).parent / "configs"
KINDS = ("methods", "datasets", "protocols", "heads", "balancers")
#: Most seeds (or cells) one command may expand to: a typo like 0-100000 fails at once.
MAX_EXPANSION = 10_000


#: Trainer settings a stage of a multi-stage method may set for itself (``train.stages.<stage>.X``).
STAGE_KEYS: tuple[str, ...] = ("epochs", "batch_size", "optimizer", "lr", "betas", "momentum", "nesterov",
                               "weight_decay", "scheduler", "warmup_epochs", "decay_start", "step_epochs",
                               "step_gamma", "poly_power", "patience", "min_epochs", "grad_clip")
Beta = Annotated[float, Field(ge=0, lt=1)]


@config
class TrainConfig:
    """Optimisation, early stopping and device settings of one run.

    The defaults are stated (with why) in ``configs/defaults.yaml``; a test checks the two agree.
    ``stages`` holds the settings of each stage of a multi-stage method that differ from the run's
    (``{"pretrain": {"epochs": 4}, "student": {"epochs": 8, "betas": [0.5, 0.999]}}``); the regime
    fills the stage epochs (:mod:`mmbench.regime`). :meth:`for_stage` merges them.
    """

    epochs: PosInt = 20
    batch_size: Annotated[int, Field(ge=2, strict=True)] = 64
    eval_batch_size: PosInt = 256
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: PosFloat = 1e-3
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: Bool = False
    weight_decay: NonNegFloat = 1e-4
    scheduler: Literal["cosine", "constant", "linear", "step", "poly"] = "cosine"
    warmup_epochs: NonNegInt = 0
    decay_start: Annotated[float, Field(ge=0, lt=1)] = 0.0
    step_epochs: PosInt = 30
    step_gamma: PosFloat = 0.1
    poly_power: PosFloat = 0.9
    patience: PosInt = 5
    min_epochs: PosInt = 1
    grad_clip: NonNegFloat = 1.0
    stage_selection: Literal["all", "last"] = "all"
    stages: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    device: str = "auto"
    amp: Bool = True
    num_threads: NonNegInt = 0
    max_steps_per_epoch: PosInt | None = None
    #: CUDA only: convolutions in the NHWC memory format (faster on tensor cores)
    channels_last: Bool = True
    #: ``torch.compile`` the method before training (worth it on CUDA for long runs; the first epoch compiles)
    compile: Bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("nesterov needs optimizer sgd with momentum > 0")
        typed = {}
        for name, over in self.stages.items():
            if not isinstance(over, dict):
                raise ConfigError(f"stages.{name}: expected a mapping of trainer settings, got {over!r}")
            bad = sorted(set(over) - set(STAGE_KEYS))
            if bad:
                raise ConfigError(f"stages.{name}: {bad[0]!r} cannot be set per stage; expected one of "
                                  f"{', '.join(STAGE_KEYS)}")
            merged = validate(TrainConfig, {**self._base(), **over}, f"stages.{name}")
            typed[name] = {k: dump(getattr(merged, k)) for k in over}  # canonical values (hash-stable)
        object.__setattr__(self, "stages", typed)

    def _base(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "stages"}

    def for_stage(self, name: str) -> TrainConfig:
        """The settings stage ``name`` trains with: the run's, with the stage's own on top."""
        return validate(TrainConfig, {**self._base(), **self.stages.get(name, {})}, f"train.stages.{name}")

    def stage_epochs(self) -> dict[str, int]:
        """Epochs per stage where the stages are set (empty for a single-stage method)."""
        return {n: int(o.get("epochs", self.epochs)) for n, o in self.stages.items()}


@config
class MethodConfig:
    """A ``methods/<name>.yaml`` file."""

    name: str
    impl: str
    cite: str = ""
    description: str = ""
    notes: str = ""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    head: str = "native"
    head_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    balancer: str = "none"
    balancer_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    fair: FairRule = dataclasses.field(default_factory=FairRule)
    paper: PaperRecipe = dataclasses.field(default_factory=PaperRecipe)


@config
class ComponentConfig:
    """A ``heads/<name>.yaml`` or ``balancers/<name>.yaml`` file: the paper's values of a head or balancer."""

    name: str
    cite: str = ""
    description: str = ""
    notes: str = ""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    fair: FairRule = dataclasses.field(default_factory=FairRule)


@config
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
    hidden: PosInt = 64
    encoders: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: training-time image augmentation (:class:`~mmbench.data.augment_config.AugmentConfig`); none if absent
    augment: dict[str, Any] | None = None


@config
class ProtocolConfig:
    """A ``protocols/<name>.yaml`` grid: methods x datasets x scenarios x rates x test rates x seeds."""

    name: str
    description: str = ""
    cite: str = ""
    methods: list[str] = dataclasses.field(default_factory=list)
    datasets: list[str] = dataclasses.field(default_factory=list)
    scenarios: list[str] = dataclasses.field(default_factory=lambda: ["none"])
    rates: list[Any] = dataclasses.field(default_factory=lambda: [0.0])
    test_rates: list[Any] | None = None
    seeds: list[NonNegInt] = dataclasses.field(default_factory=lambda: [0])
    set: dict[str, Any] = dataclasses.field(default_factory=dict)
    regime: Regime = DEFAULT_REGIME

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


# --------------------------------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 float rule (``1e-3`` and ``5E+4`` are numbers)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text with :class:`_Loader`."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def config_dirs(extra: list[str] | tuple[str, ...] | None = None) -> list[Path]:
    """User folders (first) then the packaged folder."""
    dirs = [Path(d) for d in (extra or [])]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"--config-dir {d}: not a directory (expected a folder with methods/, "
                              "datasets/ and/or protocols/)")
    return [*dirs, PACKAGE_CONFIGS]


def list_names(kind: str, extra: list[str] | None = None) -> list[str]:
    """All config names of ``kind`` (``methods`` / ``datasets`` / ``protocols`` / ``heads`` / ``balancers``)."""
    names: set[str] = set()
    for d in config_dirs(extra):
        names.update(p.stem for p in (d / kind).glob("*.yaml"))
    return sorted(names)


def find_config(kind: str, name: str, extra: list[str] | None = None, required: bool = True) -> Path | None:
    """Path of ``<kind>/<name>.yaml`` (a path to an existing file is accepted too)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for d in config_dirs(extra):
        cand = d / kind / f"{name}.yaml"
        if cand.is_file():
            return cand
    if not required:
        return None
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
        data = yaml_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
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


def _load(kind: str, name: str, cls: type, extra: list[str] | None, required_key: str | None = None) -> Any:
    path = find_config(kind, name, extra)
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    where = _where(path)
    if required_key and required_key not in data:
        raise ConfigError(f"{where}: missing key {required_key!r}")
    return validate(cls, data, where), where


# ------------------------------------------------------------------------------------------ methods
def load_method(name: str, extra: list[str] | None = None) -> MethodConfig:
    """Load and validate ``methods/<name>.yaml``: params against the method's config class, its ``fair:``
    rule (stages of a multi-stage method, parameters counted in epochs) and its ``paper:`` recipe."""
    path = find_config("methods", name, extra)
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    where = _where(path)
    if "impl" not in data:
        raise ConfigError(f"{where}: missing key 'impl'")
    if "train" in data:
        raise ConfigError(f"{where}: train: a method YAML cannot set trainer settings (every method trains with "
                          "the same ones under --regime fair); put the paper's under paper: train: "
                          "(used by --regime paper), or set them on the dataset card or with --set train.X")
    mc = validate(MethodConfig, data, where)
    method_parts(mc.impl, mc.params, mc.head, mc.head_params, mc.balancer, mc.balancer_params, where, extra)
    check_fair_rule(mc.fair, METHODS.config(mc.impl), f"{where}: fair")
    declared = getattr(METHODS.config(mc.impl), "STAGES", ())
    if tuple(mc.fair.stages) != tuple(declared):
        raise ConfigError(f"{where}: fair.stages: method {mc.impl!r} trains in "
                          + (f"the stages {', '.join(declared)} (in this order): give each its share of train.epochs"
                             if declared else "one stage: remove fair.stages"))
    if mc.paper.params:
        validate(METHODS.config(mc.impl), {**mc.params, **mc.paper.params}, f"{where}: paper.params")
    paper_train = validate(TrainConfig, _deep_merge(trainer_defaults(), mc.paper.train), f"{where}: paper.train")
    extra_stages = sorted(set(paper_train.stages) - set(declared))
    if extra_stages:
        raise ConfigError(f"{where}: paper.train.stages.{extra_stages[0]}: not a stage of method {mc.impl!r}"
                          + (f" (stages: {', '.join(declared)})" if declared else " (it trains in one stage)"))
    raw_stages = mc.paper.train.get("stages") or {}
    published = {n: raw_stages[n]["epochs"] for n in declared if "epochs" in raw_stages.get(n, {})}
    if published and (len(published) != len(declared) or mc.paper.train.get("epochs") != sum(published.values())):
        raise ConfigError(f"{where}: paper.train: give the published epochs of every stage "
                          f"({', '.join(declared)}) and their sum as epochs; got stages {published} and "
                          f"epochs {mc.paper.train.get('epochs')}")
    return mc


def check_fair_rule(rule: FairRule, cfg_cls: type, where: str) -> None:
    """``fair.params`` names fields of ``cfg_cls`` (parameters counted in epochs)."""
    from .typed import field_names

    known = field_names(cfg_cls)
    for p in rule.params:
        if p not in known:
            raise ConfigError(f"{where}.params.{p}: not a parameter of {cfg_cls.__name__} (known: {', '.join(known)})")


def load_component(kind: Literal["heads", "balancers"], name: str, extra: list[str] | None = None) -> ComponentConfig:
    """``heads/<name>.yaml`` or ``balancers/<name>.yaml``; a registered name without a file has no params."""
    registry = HEADS if kind == "heads" else BALANCERS
    path = find_config(kind, name, extra, required=False)
    if path is None:
        registry.config(name)  # unknown names fail here with suggestions
        return ComponentConfig(name=name)
    comp, where = _load(kind, str(path), ComponentConfig, extra)
    try:
        cfg = registry.config(comp.name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: name: {exc}") from None
    validate(cfg, comp.params, f"{where}: params")
    if comp.fair.stages:
        raise ConfigError(f"{where}: fair.stages: only a method trains in stages; a {kind[:-1]} takes fair.params")
    check_fair_rule(comp.fair, cfg, f"{where}: fair")
    return comp


def component_params(kind: Literal["heads", "balancers"], name: str, method_name: str | None,
                     method_params: dict[str, Any], extra: list[str] | None) -> dict[str, Any]:
    """A head's or balancer's params: its own YAML, then the method YAML's for that same component."""
    base = dict(load_component(kind, name, extra).params)
    return {**base, **(method_params if method_name == name else {})}


def method_parts(impl: str, params: dict, head: str, head_params: dict, balancer: str, balancer_params: dict,
                 where: str, extra: list[str] | None = None) -> tuple[Any, Any, Any]:
    """Typed (method params, head params, balancer params); checks that the method can take the head."""
    typed_params = validate(METHODS.config(impl), params, f"{where}: params")
    typed_head = validate(HEADS.config(head), component_params("heads", head, head, head_params, extra),
                          f"{where}: head_params")
    typed_bal = validate(BALANCERS.config(balancer),
                         component_params("balancers", balancer, balancer, balancer_params, extra),
                         f"{where}: balancer_params")
    if head != "native" and impl in _NO_HEADS:
        raise ConfigError(f"{where}: method {impl!r} cannot take head {head!r} (it exposes no per-modality "
                          "embeddings a head could use); use head: native")
    return typed_params, typed_head, typed_bal


#: Methods whose outputs no non-native head can read (none among the built-ins).
_NO_HEADS: frozenset[str] = frozenset()


# ----------------------------------------------------------------------------------------- datasets
def load_dataset(name: str, extra: list[str] | None = None) -> DatasetCard:
    """Load and validate ``datasets/<name>.yaml`` (options against the adapter's options class)."""
    card, where = _load("datasets", name, DatasetCard, extra, "adapter")
    adapter_options(card, where)
    encoders_config(card, where)
    augment_config(card.augment, where)
    validate(TrainConfig, card.train, f"{where}: train")
    if "stages" in card.train:
        raise ConfigError(f"{where}: train.stages: a dataset card sets the run's budget (train.epochs), which "
                          "multi-stage methods split between their stages; per-stage settings belong to a method's "
                          "paper: block or to --set train.stages.<stage>.X")
    return card


def adapter_options(card: DatasetCard, where: str | None = None) -> Any:
    """The card's ``options`` as the adapter's typed options."""
    return validate(DATASETS.config(card.adapter), card.options,
                    f"{where or 'datasets/' + card.name + '.yaml'}: options")


def augment_config(raw: dict[str, Any] | None, where: str) -> Any:
    """A card's ``augment`` block as :class:`~mmbench.data.augment_config.AugmentConfig` (None: no augmentation)."""
    from .data.augment_config import AugmentConfig

    return None if raw is None else validate(AugmentConfig, raw, f"{where}: augment")


def encoders_config(card: DatasetCard, where: str | None = None) -> EncodersConfig:
    """The card's ``encoders`` block, each entry typed by its encoder kind's config."""
    where = where or f"datasets/{card.name}.yaml"
    return typed_encoders(card.encoders, where)


def typed_encoders(raw: dict[str, Any], where: str) -> EncodersConfig:
    """An ``encoders`` mapping (``image``/``tabular`` entries with a ``kind``, optional ``freeze``) as
    :class:`EncodersConfig`."""
    unknown = set(raw) - {"image", "tabular", "freeze"}
    if unknown:
        raise ConfigError(f"{where}: encoders: unknown key {sorted(unknown)[0]!r}; expected image, tabular, freeze")
    freeze = raw.get("freeze", False)
    if not isinstance(freeze, bool):
        raise ConfigError(f"{where}: encoders.freeze: expected true or false, got {freeze!r}")
    defaults = EncodersConfig()
    parts = {}
    for mod in ("image", "tabular"):
        entry = dict(raw.get(mod) or {})
        kind = entry.get("kind", getattr(defaults, mod).kind)
        try:
            cfg_cls = ENCODERS.config(kind)
        except ConfigError as exc:
            raise ConfigError(f"{where}: encoders.{mod}: {exc}") from None
        entry["kind"] = kind
        parts[mod] = validate(cfg_cls, entry, f"{where}: encoders.{mod}")
    if freeze and parts["image"].kind != "timm":
        raise ConfigError(f"{where}: encoders.freeze: only timm image encoders can be frozen, not "
                          f"{parts['image'].kind!r} (it has no pretrained weights); train it end to end")
    return EncodersConfig(**parts, freeze=freeze)


# ---------------------------------------------------------------------------------------- protocols
def load_protocol(name: str, extra: list[str] | None = None) -> ProtocolConfig:
    """Load and validate ``protocols/<name>.yaml``; its cells and ``set`` keys are checked eagerly."""
    proto, where = _load("protocols", name, ProtocolConfig, extra)
    try:
        proto.cells()
        for key in proto.set:
            canonical_key(key)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return proto


# ---------------------------------------------------------------------------------------- overrides
def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["train.epochs=3", "head=dpl"]`` -> ``{"train.epochs": 3, "head": "dpl"}`` (values are YAML 1.2)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. train.epochs=5)")
        try:
            value = yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out


_ROOTS = ("method", "head", "balancer", "dataset", "encoders", "train")
_COMPONENT_FIELDS = ("name", "params")


def canonical_key(key: str) -> tuple[str, ...]:
    """A ``--set`` key as its path in the spec tree (short forms expanded); unknown roots fail in one line."""
    parts = tuple(key.split("."))
    head, rest = parts[0], parts[1:]
    if key in ("head", "balancer"):
        return (key, "name")
    if key == "hidden":
        return ("dataset", "hidden")
    if head == "params" and rest:
        return ("method", "params", *rest)
    if head == "data" and rest:
        return ("dataset", "options", *rest)
    if head == "method" and rest:
        return parts if rest[0] == "params" and len(rest) > 1 else ("method", "params", *rest)
    if head in ("head", "balancer") and rest:
        return parts if rest[0] in _COMPONENT_FIELDS and (rest[0] == "name") == (len(rest) == 1) \
            else (head, "params", *rest)
    if head == "dataset" and rest:
        if rest[0] in ("options", "hidden") and (rest[0] == "hidden") == (len(rest) == 1):
            return parts
        if rest[0] == "augment" and len(rest) <= 2:
            return parts
        raise ConfigError(f"--set {key}: expected dataset.options.<key>, dataset.hidden or dataset.augment[.<field>]")
    if head == "encoders" and len(rest) == 2 and rest[0] in ("image", "tabular"):
        return parts
    if head == "encoders" and rest == ("freeze",):
        return parts
    if head == "encoders":
        raise ConfigError(f"--set {key}: expected encoders.<image|tabular>.<field> or encoders.freeze")
    if head == "train" and len(rest) == 1:
        return parts
    if head == "train" and len(rest) == 3 and rest[0] == "stages":
        return parts
    raise ConfigError(f"--set {key}: unknown key; expected a path of the spec tree starting with "
                      f"{', '.join(_ROOTS)} (short forms: params.X, head=NAME, head.X, balancer=NAME, "
                      "balancer.X, data.X, hidden; per stage: train.stages.<stage>.X)")


def _put(tree: dict, path: tuple[str, ...], value: Any) -> None:
    node = tree
    for p in path[:-1]:
        if node.get(p) is None:  # absent, or null (e.g. a card without augment:) -> a new mapping
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {p!r} is not a mapping")
    node[path[-1]] = value


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, str], list[tuple[tuple[str, ...], Any]]]:
    names: dict[str, str] = {}
    rest: list[tuple[tuple[str, ...], Any]] = []
    for key, value in overrides.items():
        path = canonical_key(key)
        if path[1:] == ("name",) and path[0] in ("head", "balancer"):
            if not isinstance(value, str):
                raise ConfigError(f"--set {key}={value!r}: expected a registered {path[0]} name")
            names[path[0]] = value
        else:
            rest.append((path, value))
    return names, rest


# ------------------------------------------------------------------------------------------- resolve
def resolve(method: str, dataset: str, missing: MissingSpec, seed: int, *,
            overrides: dict[str, Any] | None = None, sim_seed: int | None = None,
            config_dir: list[str] | None = None, regime: str = DEFAULT_REGIME) -> RunSpec:
    """Merge method YAML, dataset card, regime, overrides and the cell into a validated :class:`RunSpec`.

    Trainer settings: ``configs/defaults.yaml`` < card ``train:`` < (``paper`` only) the method YAML's
    ``paper: train:`` < overrides; then the budget-derived values (stage epochs, ``fair: params:``) are
    filled from the final ``train.epochs`` (:func:`mmbench.regime.apply_budget`).
    """
    check_regime(regime)
    mc = load_method(method, config_dir)
    card = load_dataset(dataset, config_dir)
    names, rest = _split_overrides(overrides or {})
    head, balancer = names.get("head", mc.head), names.get("balancer", mc.balancer)
    params, train = dict(mc.params), _deep_merge(trainer_defaults(), card.train)
    if regime == "paper":
        params.update(mc.paper.params)
        train = _deep_merge(train, mc.paper.train)
    tree: dict[str, Any] = {
        "method": {"params": params},
        "head": {"params": component_params("heads", head, mc.head, mc.head_params, config_dir)},
        "balancer": {"params": component_params("balancers", balancer, mc.balancer, mc.balancer_params,
                                                config_dir)},
        "dataset": {"hidden": card.hidden, "options": dict(card.options),
                    "augment": None if card.augment is None else dict(card.augment)},
        "encoders": copy.deepcopy(card.encoders),
        "train": train,
    }
    for path, value in rest:
        _put(tree, path, value)
    where = f"{method} on {dataset}:"
    validate(TrainConfig, tree["train"], f"{where} train")  # train.epochs is sound before the budget uses it
    apply_budget(tree, regime, mc.fair, load_component("balancers", balancer, config_dir).fair, mc.paper.train,
                 {path for path, _ in rest}, where)
    params = validate(METHODS.config(mc.impl), tree["method"]["params"], f"{where} method.params")
    head_params = validate(HEADS.config(head), tree["head"]["params"], f"{where} head.params")
    bal_params = validate(BALANCERS.config(balancer), tree["balancer"]["params"], f"{where} balancer.params")
    if head != "native" and mc.impl in _NO_HEADS:
        raise ConfigError(f"method {mc.impl!r} cannot take head {head!r}; use head: native")
    hidden = validate(DatasetCard, {"name": card.name, "adapter": card.adapter, "hidden": tree["dataset"]["hidden"]},
                      f"{where} dataset").hidden
    options = validate(DATASETS.config(card.adapter), tree["dataset"]["options"], f"{where} dataset.options")
    encoders = typed_encoders(tree["encoders"], f"{method} on {dataset}")
    # frozen features are computed once from the un-augmented images: no augmentation can apply
    augment = None if encoders.freeze else augment_config(tree["dataset"]["augment"], f"{where} dataset")
    train_cfg = validate(TrainConfig, tree["train"], f"{where} train")
    return RunSpec(
        method=Component(mc.name, mc.impl, METHODS.version(mc.impl), params),
        head=Component(head, head, HEADS.version(head), head_params),
        balancer=Component(balancer, balancer, BALANCERS.version(balancer), bal_params),
        dataset=DatasetSpec(card.name, card.adapter, DATASETS.version(card.adapter), card.task,
                            card.primary_metric, hidden, options, augment),
        encoders=encoders,
        missing=missing,
        train=train_cfg,
        train_seed=int(seed),
        sim_seed=int(seed if sim_seed is None else sim_seed),
        regime=regime,
    )


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0..4], ``"0,2,5"`` -> [0, 2, 5], ``"3"`` -> [3]; at most :data:`MAX_EXPANSION`."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                if hi - lo + 1 + len(seeds) > MAX_EXPANSION:
                    raise ConfigError(f"--seeds {text!r}: {hi - lo + 1} seeds is more than the {MAX_EXPANSION} "
                                      "one command may run; use a smaller range")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected a seed range like 0-4, a list like 0,2,5 "
                          "or a single seed") from None
    if any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds {text!r}: seeds must be >= 0")
    return list(dict.fromkeys(seeds))


def spec_summary(spec: RunSpec) -> dict[str, Any]:
    """The resolved settings a dry run shows (regime and trainer settings included)."""
    return {"run_id": spec.run_id, "method": spec.label, "dataset": spec.dataset.name,
            "cell": spec.missing.describe(), "seed": spec.train_seed, "regime": spec.regime,
            "train": dump(spec.train)}


def budget_summary(spec: RunSpec, config_dir: list[str] | None = None) -> str:
    """How the run's epochs are spent: ``pretrain 4 + student 8 epochs``, and the parameters counted in
    epochs (``fair: params:`` of the method and balancer YAMLs) with their resolved values."""
    stages = spec.train.stage_epochs()
    parts = [" + ".join(f"{n} {e}" for n, e in stages.items()) + " epochs" if stages else f"{spec.train.epochs} epochs"]
    try:
        mc = load_method(spec.method.name, config_dir)
        bal = load_component("balancers", spec.balancer.name, config_dir)
    except ConfigError:  # a method given as a path, listed from another folder
        return parts[0]
    rules = (("method", spec.method.params, mc.fair), ("balancer", spec.balancer.params, bal.fair))
    for section, params, rule in rules:
        parts += [f"{section}.{p}={getattr(params, p)}" for p in rule.params]
    return "; ".join(parts)

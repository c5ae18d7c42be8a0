"""Registry, YAML configs, overrides and the run-spec hash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmbench.config import (
    RunSpec,
    canonical_json,
    find_config,
    list_names,
    load_dataset,
    load_method,
    load_protocol,
    load_yaml,
    parse_seeds,
    parse_set,
    resolve,
    spec_hash,
)
from mmbench.errors import ConfigError
from mmbench.protocols import MissingSpec
from mmbench.registry import BALANCERS, HEADS, METHODS, Registry
from mmbench.typed import dump, validate


def test_registry_duplicates_and_suggestions() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("late_fusion")
    class A:
        pass

    with pytest.raises(ValueError, match="duplicate widget name 'late_fusion'"):
        reg.add("late_fusion", object())
    with pytest.raises(ConfigError, match="did you mean 'late_fusion'"):
        reg.get("late_fusoin")
    assert reg.get("late_fusion") is A


def test_lazy_registry_entry() -> None:
    reg: Registry[object] = Registry("thing")
    reg.add("ordered", "collections:OrderedDict")
    import collections

    assert reg.get("ordered") is collections.OrderedDict


def test_unknown_method_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'late_fusion'"):
        load_method("late_fuson")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    _write(tmp_path / "methods" / "lf.yaml", "impl: late_fusion\nparams: {dropout: 0.1, droput: 0.2}\n")
    with pytest.raises(ConfigError, match=r"lf\.yaml: params: unknown key 'droput' \(did you mean 'dropout'\?\)"):
        load_method("lf", [str(tmp_path)])
    _write(tmp_path / "methods" / "lf2.yaml", "impl: late_fusion\nparamz: {}\n")
    with pytest.raises(ConfigError, match="lf2.yaml: unknown key 'paramz'"):
        load_method("lf2", [str(tmp_path)])


def test_wrong_type_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "methods" / "lf.yaml", "impl: late_fusion\nparams: {dropout: high}\n")
    with pytest.raises(ConfigError, match="params.dropout: expected a number"):
        load_method("lf", [str(tmp_path)])


def test_bad_yaml_is_one_clear_error(tmp_path: Path) -> None:
    _write(tmp_path / "methods" / "broken.yaml", "impl: late_fusion\nparams: {dropout: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_method("broken", [str(tmp_path)])


def test_include_inherits_and_overrides(tmp_path: Path) -> None:
    _write(tmp_path / "methods" / "base.yaml", "impl: late_fusion\ncite: x\nparams: {dropout: 0.3}\n"
           "train: {epochs: 7, lr: 0.01}\n")
    _write(tmp_path / "methods" / "child.yaml", "include: base.yaml\ntrain: {epochs: 2}\n")
    mc = load_method("child", [str(tmp_path)])
    assert mc.name == "child" and mc.params == {"dropout": 0.3} and mc.train == {"epochs": 2, "lr": 0.01}


def test_user_config_dir_is_searched_first(tmp_path: Path) -> None:
    _write(tmp_path / "methods" / "late_fusion.yaml", "impl: late_fusion\ncite: mine\n")
    assert load_method("late_fusion", [str(tmp_path)]).cite == "mine"
    assert load_method("late_fusion").cite != "mine"


def test_overrides_precedence() -> None:
    cell = MissingSpec("both", 0.5)
    spec = resolve("late_fusion", "synthetic-tiny", cell, 0,
                   overrides=parse_set(["train.epochs=3", "params.dropout=0.25", "data.n_samples=100",
                                        "encoders.tabular.depth=2", "hidden=8"]))
    assert spec.train.epochs == 3 and spec.method.params.dropout == 0.25
    assert spec.dataset.options.n_samples == 100 and spec.encoders.tabular.depth == 2
    assert spec.dataset.hidden == 8
    assert spec.train.lr == load_dataset("synthetic-tiny").train["lr"]  # card value survives
    with pytest.raises(ConfigError, match="--set nonsense.x"):
        resolve("late_fusion", "synthetic-tiny", cell, 0, overrides={"nonsense.x": 1})
    with pytest.raises(ConfigError, match="unknown key 'epochz'"):
        resolve("late_fusion", "synthetic-tiny", cell, 0, overrides={"train.epochz": 1})


def test_parse_set_and_seeds() -> None:
    assert parse_set(["a.b=3", "c=true", "d=x y"]) == {"a.b": 3, "c": True, "d": "x y"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set(["novalue"])
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,2,5") == [0, 2, 5]
    assert parse_seeds("3") == [3]
    for bad in ("a-b", "4-1", "", "1,,2", "-3"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_spec_hash_is_stable_across_dict_orders_and_processes() -> None:
    spec = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 1)
    d = spec.to_dict()
    reordered = dict(reversed(list(d.items())))
    assert spec_hash(reordered) == spec.run_id
    assert canonical_json(reordered) == canonical_json(d)
    code = ("from mmbench.config import resolve; from mmbench.protocols import MissingSpec;"
            "print(resolve('late_fusion','synthetic-tiny',MissingSpec('both',0.5),1).run_id)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert other == spec.run_id
    assert RunSpec.from_dict(d).run_id == spec.run_id


def test_spec_hash_changes_with_anything_that_matters() -> None:
    base = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0)
    ids = {base.run_id,
           resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.7), 0).run_id,
           resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 1).run_id,
           resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, sim_seed=5).run_id,
           resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0,
                   overrides={"train.lr": 0.5}).run_id}
    assert len(ids) == 5


@pytest.mark.parametrize("kind", ["methods", "datasets", "protocols"])
def test_every_packaged_config_validates(kind: str) -> None:
    loader = {"methods": load_method, "datasets": load_dataset, "protocols": load_protocol}[kind]
    names = list_names(kind)
    assert names
    for n in names:
        loader(n)


def test_method_yaml_stems_match_registered_impls() -> None:
    for n in list_names("methods"):
        mc = load_method(n)
        assert mc.impl in METHODS
        if "+" not in n and "-" not in n:  # plain configs are named after their registry key
            assert n == mc.impl


COMPONENTS = {"methods": METHODS, "heads": HEADS, "balancers": BALANCERS}


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k, reg in COMPONENTS.items() for n in reg.names()])
def test_base_yaml_and_config_class_agree(kind: str, name: str) -> None:
    """One source of truth: where the base YAML named after the registry key (``methods/<impl>.yaml``,
    ``heads/<name>.yaml``, ``balancers/<name>.yaml``) sets a parameter, it equals the config class's
    default, so a run with ``--head dpl`` on any method and a run from the YAML get the same values.
    Variant YAMLs (``dfpl-coarse``, ``late_fusion+dpl-arcface``, ...) change values on purpose."""
    path = find_config(kind, name, required=False)
    assert path is not None, f"built-in {kind[:-1]} {name!r} ships no {kind}/{name}.yaml"
    raw = load_yaml(path)
    assert "include" not in raw, f"{path.name} is a base YAML: it must not include another"
    params = raw.get("params") or {}
    cls = COMPONENTS[kind].config(name)
    given, default = dump(validate(cls, params, str(path))), dump(cls())
    wrong = {k: (given[k], default[k]) for k in params if given[k] != default[k]}
    assert not wrong, f"{kind}/{name}.yaml and {cls.__name__} disagree (yaml, class): {wrong}"


def test_protocol_cells() -> None:
    p = load_protocol("dfpl-table1")
    cells = p.cells()
    assert len(cells) == 9 and {c.scenario for c in cells} == {"image", "tabular", "both"}
    sweep = load_protocol("test-sweep").cells()
    assert [c.test_rate for c in sweep] == pytest.approx([0.1 * k for k in range(1, 10)])

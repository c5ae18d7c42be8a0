"""Every shipped method YAML builds through the runner and takes one optimiser step in every stage.

``mmbench validate`` only type-checks the YAMLs; here each ``methods/*.yaml`` (variants and
``late_fusion+<head|balancer>`` compositions included) is resolved on ``synthetic-tiny`` with
:func:`mmbench.config.resolve`, built with :func:`mmbench.runner.build_pipeline` exactly as a run
builds it, set up (MCE's reference stage cut to one epoch), and trained one step per stage. The
step must give finite named terms and change the parameters, and the built pipeline must carry the
head, balancer and parameters the YAML asks for.
"""

from __future__ import annotations

import pytest
import torch

from mmbench.config import list_names, load_method, resolve
from mmbench.protocols import MissingSpec
from mmbench.runner import build_pipeline, load_data, presence_masks
from mmbench.train import Loader, make_optimizer
from mmbench.typed import dump

METHOD_YAMLS = list_names("methods")
#: a smaller dataset and reference stage than the card's: one step is all that is checked
FAST = {"data.n_samples": 120, "balancer.ref_epochs": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_every_kind_of_yaml_is_shipped() -> None:
    """The list below is not vacuous: plain methods, variants and both compositions are among it."""
    assert {"late_fusion", "dfpl", "dfpl-coarse", "late_fusion+dpl", "late_fusion+mce"} <= set(METHOD_YAMLS)


@pytest.mark.parametrize("name", METHOD_YAMLS)
def test_shipped_method_yaml_builds_and_steps(name: str) -> None:
    mc = load_method(name)
    overrides = {k: v for k, v in FAST.items() if not k.startswith("balancer.") or mc.balancer == "mce"}
    spec = resolve(name, "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides=overrides)
    # the YAML's composition and parameters reach the spec (a variant's own values included)
    assert (spec.method.impl, spec.head.impl, spec.balancer.impl) == (mc.impl, mc.head, mc.balancer)
    params = dump(spec.method.params)
    assert all(params[k] == dump(v) for k, v in mc.params.items()), f"{name}: params lost on the way to the spec"
    head_params = dump(spec.head.params)
    assert all(head_params[k] == dump(v) for k, v in mc.head_params.items()), f"{name}: head_params lost"
    bal_params = dump(spec.balancer.params)
    assert all(bal_params[k] == dump(v) for k, v in mc.balancer_params.items()), f"{name}: balancer_params lost"

    torch.manual_seed(0)
    info, splits, _, _ = load_data(spec, None)
    pipe = build_pipeline(spec, info)
    assert pipe.head.registry_name == mc.head and pipe.balancer.registry_name == mc.balancer
    assert dump(pipe.method.cfg) == params and dump(pipe.head.cfg) == head_params
    presents, indices, _ = presence_masks(spec, splits)
    loaders = {s: Loader(splits[s], presents[s], 32, shuffle=s == "train", indices=indices[s]) for s in splits}
    pipe.balancer.setup(pipe, loaders)

    stages = pipe.method.stages()
    for stage in stages:
        pipe.method.begin_stage(stage.name)
        pipe.train()
        batch = next(iter(loaders["train"]))
        if stage.rows is not None:
            batch = batch.select(stage.rows(batch))
        assert len(batch) >= 2, f"{name}: stage {stage.name!r} got no rows from a 32-row batch"
        trainable = [p for p in pipe.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in trainable]
        opt = make_optimizer(trainable, spec.train)
        out = pipe(batch)
        terms = pipe.loss_terms(batch, out)
        assert terms and all(v.dim() == 0 and torch.isfinite(v) for v in terms.values()), terms
        if mc.head == "dpl":
            assert "task" not in terms and "arcface" in terms
            assert ("supcon" in terms) == (spec.head.params.supcon_weight > 0)
        if mc.balancer == "mce":
            assert "mce_sub" in terms
        opt.zero_grad(set_to_none=True)
        torch.stack([t.float() for t in terms.values()]).sum().backward()
        opt.step()
        moved = sum(not torch.equal(b, p.detach()) for b, p in zip(before, trainable, strict=True))
        assert moved > 0, f"{name}: stage {stage.name!r} changed no parameter"

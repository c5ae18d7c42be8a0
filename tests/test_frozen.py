"""Frozen-encoder mode: image features computed once per dataset x encoder x weights x image size,
cached on disk and reused by every cell of a grid and by later grids; each cell trains the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmbench import features
from mmbench.config import resolve
from mmbench.encoders.build import build_encoder, build_shared_specific
from mmbench.encoders.config import EncodersConfig, ImageEncoderConfig, TabularEncoderConfig
from mmbench.errors import ConfigError
from mmbench.executors import Hooks, RunContext, SequentialExecutor
from mmbench.plan import Plan
from mmbench.protocols import MissingSpec
from mmbench.records import read_record, record_path
from tests.conftest import tiny_data

FAST = {"train.epochs": 1, "data.n_samples": 160, "train.eval_batch_size": 64, "train.max_steps_per_epoch": 3,
        "encoders.freeze": True}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> list[int]:
    """A fresh feature cache folder; returns the list of cut points computed (one entry per computation)."""
    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(features, "_OPEN", {})
    built: list[int] = []
    real = features._build

    def counting(path, spec, info, splits, k, device, key):
        built.append(k)
        return real(path, spec, info, splits, k, device, key)

    monkeypatch.setattr(features, "_build", counting)
    return built


def grid(methods, seeds, out: Path, **extra):
    specs = [resolve(m, "synthetic-tiny", MissingSpec("both", 0.5), s, overrides={**FAST, **extra})
             for m in methods for s in seeds]
    outcomes = SequentialExecutor().run(Plan(specs, "frozen"), RunContext(out), Hooks())
    return specs, outcomes


def test_frozen_grid_computes_features_once_and_a_second_grid_reuses_them(tmp_path: Path, cache,
                                                                          monkeypatch) -> None:
    specs, outcomes = grid(["late_fusion", "late_fusion+dpl"], (0, 1), tmp_path / "a")
    assert [o.status for o in outcomes] == ["ok"] * 4
    assert cache == [4]  # test_resnet has 4 stages: one computation for the whole grid
    recs = [read_record(record_path(tmp_path / "a", s)) for s in specs]
    assert [r.feature_cache for r in recs] == ["built", "reused", "reused", "reused"]
    assert all(r.spec["encoders"]["freeze"] is True for r in recs)
    # a second grid, in a fresh process state: the features come from disk
    monkeypatch.setattr(features, "_OPEN", {})
    specs2, outcomes2 = grid(["dmrnet", "late_fusion"], (2,), tmp_path / "b")
    assert [o.status for o in outcomes2] == ["ok", "ok"] and cache == [4]
    assert [read_record(record_path(tmp_path / "b", s)).feature_cache for s in specs2] == ["reused", "reused"]
    # end-to-end runs record no feature cache
    e2e, _ = grid(["late_fusion"], (0,), tmp_path / "c", **{"encoders.freeze": False})
    assert read_record(record_path(tmp_path / "c", e2e[0])).feature_cache is None


def test_the_key_separates_what_the_features_depend_on() -> None:
    info, _ = tiny_data()
    base = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides=FAST)
    key = features.feature_key(base, info, 4, None)
    assert features.feature_key(base, info, 3, None) != key  # another cut point
    assert features.feature_key(base, info, 4, {"digest": "x"}) != key  # other data
    other_size = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0,
                         overrides={**FAST, "data.image_size": 32})
    assert features.feature_key(other_size, info, 4, None) != key
    pretrained = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0,
                         overrides={**FAST, "encoders.image.pretrained": True})
    assert features.feature_key(pretrained, info, 4, None) != key
    # methods, heads, cells, seeds and trainer settings share the features
    other = resolve("late_fusion+dpl", "synthetic-tiny", MissingSpec("none"), 5, overrides={**FAST, "train.lr": 0.1})
    assert features.feature_key(other, info, 4, None) == key


def test_frozen_encoder_trains_only_its_projection_and_matches_the_end_to_end_encoder() -> None:
    info, splits = tiny_data()
    enc_cfg = EncodersConfig(image=ImageEncoderConfig(name="test_resnet", output_stride=8),
                             tabular=TabularEncoderConfig(depth=1, heads=2, dropout=0.0), freeze=True)
    spec = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides=FAST)
    frozen = build_encoder("image", info, enc_cfg, 8)
    assert [n for n, _ in frozen.named_parameters()] == ["proj.weight", "proj.bias"]
    run = features.backbone_part(spec, info, 4, torch.device("cpu"))  # the cached part (seed-0 weights)
    sp = splits["test"]
    present = torch.ones(len(sp), 2, dtype=torch.bool)
    present[:3, 0] = False  # three absent images
    batch = sp.batch(torch.arange(8), present)
    pixels = batch.inputs["image"]["pixels"]
    absent = run(torch.zeros(1, *info.image_shape))[0]
    frozen.set_absent_features(absent)
    cached = (run(pixels) - absent).half() * present[:8, :1].view(-1, 1, 1, 1)  # as stored, zero-filled
    tokens, pooled = frozen({"features4": cached})
    # the end-to-end encoder with the same backbone weights and projection
    full = build_encoder("image", info, EncodersConfig(image=enc_cfg.image, tabular=enc_cfg.tabular), 8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        from mmbench.encoders.image import ImageEncoder

        ref = ImageEncoder(spec.encoders.image, 1, in_chans=info.image_shape[0])
    full.backbone.load_state_dict(ref.backbone.state_dict())
    full.proj.load_state_dict(frozen.proj.state_dict())
    full.eval()
    want_tokens, want_pooled = full({"pixels": pixels})
    torch.testing.assert_close(pooled, want_pooled, atol=2e-3, rtol=2e-3)  # float16 storage
    torch.testing.assert_close(tokens[:3], want_tokens[:3], atol=1e-5, rtol=1e-5)  # absent rows: exact


def test_shared_specific_pairs_train_their_top_stages_or_are_refused(tmp_path: Path, cache) -> None:
    info, _ = tiny_data()
    cfg = EncodersConfig(image=ImageEncoderConfig(name="test_resnet", output_stride=8), freeze=True)
    pair = build_shared_specific("image", info, cfg, 8, separate=1)
    names = [n for n, _ in pair.named_parameters()]
    assert any(n.startswith("shared.backbone.layer4") for n in names)
    assert any(n.startswith("specific.backbone.layer4") for n in names)
    assert {n.split(".")[2] for n in names if ".backbone." in n} == {"layer4"}  # stem, layer1-3: cached
    assert pair.shared.first_stage == pair.specific.first_stage == 3
    with pytest.raises(ConfigError, match="shares only its stem.*separate_stages=1"):
        build_shared_specific("image", info, cfg, 8, separate="all")
    specs, outcomes = grid(["dfpl", "drfuse"], (0,), tmp_path / "g")
    assert outcomes[0].status == "ok" and cache == [3]  # DFPL's pair: the shared stages are cached
    assert outcomes[1].status == "error" and "shares only its stem" in outcomes[1].error
    rec = read_record(record_path(tmp_path / "g", specs[0]))
    assert rec.feature_cache == "built" and rec.metrics.test


def test_pretrained_file_loads_local_weights_and_errors_are_one_line(tmp_path: Path) -> None:
    from mmbench.encoders.image import create_timm_backbone
    from mmbench.typed import validate

    torch.manual_seed(3)
    src = create_timm_backbone(ImageEncoderConfig(name="test_resnet", output_stride=None))
    weights = tmp_path / "test_resnet.pth"
    torch.save(src.state_dict(), weights)
    cfg = ImageEncoderConfig(name="test_resnet", pretrained=True, pretrained_file=str(weights), output_stride=None)
    torch.manual_seed(4)
    loaded = create_timm_backbone(cfg)
    for (k, a), (_, b) in zip(src.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ConfigError, match="pretrained_file .*no such file"):
        create_timm_backbone(ImageEncoderConfig(name="test_resnet", pretrained=True,
                                                pretrained_file=str(tmp_path / "absent.pth")))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="not loadable as 'test_resnet' weights"):
        create_timm_backbone(ImageEncoderConfig(name="test_resnet", pretrained=True,
                                                pretrained_file=str(tmp_path / "junk.pth")))
    with pytest.raises(ConfigError, match="needs pretrained: true"):
        validate(ImageEncoderConfig, {"pretrained_file": str(weights)}, "datasets/x.yaml: encoders.image")
    # the weights are part of the feature cache key
    a = features.weights_id(cfg)
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert features.weights_id(cfg) != a and features.weights_id(ImageEncoderConfig()) == {"init": "random", "seed": 0}


def test_freeze_keys_and_errors() -> None:
    spec = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides={"encoders.freeze": True})
    assert spec.encoders.freeze and spec.to_dict()["encoders"]["freeze"] is True
    from mmbench.spec import RunSpec

    assert RunSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="encoders.freeze: expected true or false"):
        resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides={"encoders.freeze": "yes"})
    from mmbench.config import typed_encoders

    with pytest.raises(ConfigError, match="adni.yaml: encoders.freeze: only timm image encoders can be frozen"):
        typed_encoders({"image": {"kind": "resnet3d"}, "freeze": True}, "datasets/adni.yaml")

"""Encoders as stem -> stages -> finish, and shared/specific pairs that compute their shared lower part once.

Parametrized over the encoder registry: a newly registered encoder needs a tiny config in ``TINY``.
"""

from __future__ import annotations

import pytest
import torch

from mmbench.data.base import DataInfo, TabularSchema
from mmbench.encoders.build import SharedSpecific, build_encoder, build_shared_specific
from mmbench.encoders.config import EncodersConfig, ImageEncoderConfig, TabularEncoderConfig
from mmbench.encoders.ehr import EHREncoderConfig
from mmbench.encoders.image import feature_map_to_tokens
from mmbench.encoders.image3d import ResNet3DConfig
from mmbench.errors import ConfigError
from mmbench.registry import ENCODERS

SCHEMA = TabularSchema(cat_cardinalities=(4, 3), n_num=3)
#: per encoder kind: (modality, DataInfo, EncodersConfig, inputs) of a tiny instance
TINY = {
    "timm": ("image", DataInfo(name="t", task="multiclass", num_classes=3, image_shape=(3, 16, 16)),
             EncodersConfig(image=ImageEncoderConfig(name="test_resnet", output_stride=8)),
             lambda: {"pixels": torch.randn(4, 3, 16, 16)}),
    "ft_transformer": ("tabular", DataInfo(name="t", task="multiclass", num_classes=3, image_shape=(3, 8, 8),
                                           tabular=SCHEMA),
                       EncodersConfig(tabular=TabularEncoderConfig(depth=2, heads=2, dropout=0.0)),
                       lambda: {"cat": torch.randint(0, 3, (4, 2)), "num": torch.randn(4, 3),
                                "num_mask": torch.tensor([[1, 0, 1]] * 4, dtype=torch.bool)}),
    "ehr_transformer": ("tabular", DataInfo(name="t", task="multilabel", num_classes=3, image_shape=(3, 8, 8),
                                            tabular_kind="timeseries", timeseries_channels=5),
                        EncodersConfig(tabular=EHREncoderConfig(depth=2, ffn_dim=16, heads=2, dropout=0.0)),
                        lambda: {"values": torch.randn(4, 6, 5), "lengths": torch.tensor([6, 3, 1, 0])}),
    "resnet3d": ("image", DataInfo(name="t", task="multiclass", num_classes=3, image_shape=(1, 16, 16, 16)),
                 EncodersConfig(image=ResNet3DConfig(widths=(4, 4, 8, 8), stem_kernel=3)),
                 lambda: {"pixels": torch.randn(2, 1, 16, 16, 16)}),
}


def test_every_registered_encoder_has_a_tiny_config() -> None:
    assert set(ENCODERS.names()) <= set(TINY), "add a tiny instance of the new encoder to TINY"


@pytest.fixture(params=sorted(TINY))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def _build(kind: str, separate: int | str):
    modality, info, cfg, make = TINY[kind]
    torch.manual_seed(0)
    return build_shared_specific(modality, info, cfg, 6, separate), make()


def test_timm_staged_forward_is_forward_features() -> None:
    """Running the timm backbone stage by stage gives exactly ``forward_features``."""
    modality, info, cfg, make = TINY["timm"]
    enc = build_encoder(modality, info, cfg, 6).eval()
    x = make()
    tokens, pooled = enc(x)
    ref = enc.proj(feature_map_to_tokens(enc.backbone.forward_features(x["pixels"])))
    assert torch.equal(tokens, ref) and torch.equal(pooled, ref.mean(1))


@pytest.mark.parametrize("separate", [1, 2, "all"])
def test_pair_equals_two_full_encoders(kind: str, separate: int | str) -> None:
    """The shared lower part computed once gives what each copy computes on its own."""
    pair, x = _build(kind, separate)
    pair.eval()
    (sh_t, sh_p), (sp_t, sp_p) = pair(x)
    for (t, p), enc in (((sh_t, sh_p), pair.shared), ((sp_t, sp_p), pair.specific)):
        ref_t, ref_p = enc(x)
        torch.testing.assert_close(t, ref_t, rtol=0, atol=0)
        torch.testing.assert_close(p, ref_p, rtol=0, atol=0)
    assert not torch.equal(sh_p, sp_p)  # the separate top layers differ


def test_pair_ties_the_lower_part_and_initialises_the_top_independently(kind: str) -> None:
    pair, _ = _build(kind, 1)
    n = len(pair.shared.stage_names)
    assert pair.num_shared == max(0, n - 1)
    shared = dict(pair.shared.named_parameters(remove_duplicate=False))
    specific = dict(pair.specific.named_parameters(remove_duplicate=False))
    tied = [k for k in shared if any(k == t or k.startswith(t + ".") for t in pair.tied)]
    top = [k for k in shared if k not in tied]
    assert top, "some parameters must belong to the separate top"
    for k in tied:
        assert shared[k] is specific[k]
    # fresh initialisation of the separate part (not a copy): the |cos| terms start below 1
    assert any(not torch.equal(shared[k], specific[k]) for k in top if shared[k].dim() > 1)
    assert all(shared[k] is not specific[k] for k in top)


def test_separate_all_shares_only_the_stem(kind: str) -> None:
    pair, _ = _build(kind, "all")
    assert pair.num_shared == 0 and pair.tied == pair.shared.stem_names
    big, _ = _build(kind, 99)  # more than the encoder has: nothing above the stem is shared
    assert big.num_shared == 0


def test_gradients_of_both_copies_reach_the_shared_lower_part(kind: str) -> None:
    pair, x = _build(kind, 1)
    (_, sh_p), (_, sp_p) = pair(x)
    params = [p for n, p in pair.shared.named_parameters()
              if any(n == t or n.startswith(t + ".") for t in pair.tied)]
    if not params:
        pytest.skip("this encoder has no parameters below its separate top")
    g_sh = torch.autograd.grad(sh_p.square().sum(), params, retain_graph=True, allow_unused=True)
    g_sp = torch.autograd.grad(sp_p.square().sum(), params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in g_sh)
    assert any(g is not None and g.abs().sum() > 0 for g in g_sp)


@pytest.mark.parametrize("bad", [0, -1, "some", 1.5, True])
def test_bad_separate_is_a_config_error(bad: object) -> None:
    modality, info, cfg, _ = TINY["timm"]
    with pytest.raises(ConfigError, match="separate_stages"):
        SharedSpecific(lambda: build_encoder(modality, info, cfg, 6), bad)  # type: ignore[arg-type]


def test_a_plain_module_cannot_form_a_pair() -> None:
    with pytest.raises(ConfigError, match="not a StagedEncoder"):
        SharedSpecific(lambda: torch.nn.Linear(2, 2), 1)  # type: ignore[arg-type,return-value]


def test_separate_stages_in_a_method_config() -> None:
    """``int | 'all'`` from YAML / --set: an int, 'all', or a one-line error naming both."""
    from mmbench.models.dfpl import DFPLConfig
    from mmbench.typed import from_dict

    assert from_dict(DFPLConfig, {"separate_stages": "all"}, "dfpl").separate_stages == "all"
    assert from_dict(DFPLConfig, {"separate_stages": 2}, "dfpl").separate_stages == 2
    with pytest.raises(ConfigError, match=r"separate_stages: expected a valid integer or expected 'all', got 'some'"):
        from_dict(DFPLConfig, {"separate_stages": "some"}, "dfpl")
    with pytest.raises(ConfigError, match=r"separate_stages: must be >= 1 or expected 'all', got 0"):
        from_dict(DFPLConfig, {"separate_stages": 0}, "dfpl")

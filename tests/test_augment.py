"""Training-time image augmentation: torchvision semantics per sample, on the device, off in evaluation."""

from __future__ import annotations

import pytest
import torch

from mmbench.config import resolve
from mmbench.data.augment import ImageAugment
from mmbench.data.augment_config import AugmentConfig
from mmbench.data.batch import Batch
from mmbench.errors import ConfigError
from mmbench.protocols import MissingSpec
from mmbench.typed import validate


def ramp(b: int = 4, size: int = 16) -> torch.Tensor:
    """Images whose channel 0 is the x coordinate in [0, 1], channel 1 the y coordinate, channel 2 = 0.5."""
    xs = (torch.arange(size) + 0.5) / size
    img = torch.stack([xs.view(1, -1).expand(size, size), xs.view(-1, 1).expand(size, size),
                       torch.full((size, size), 0.5)])
    return img.unsqueeze(0).repeat(b, 1, 1, 1)


def aug(seed: int = 0, **kw) -> ImageAugment:
    return ImageAugment(AugmentConfig(**kw), 0.0, 1.0, "cpu", seed)


def test_flip_and_full_crop_are_exact_geometry() -> None:
    x = ramp()
    torch.testing.assert_close(aug(hflip=1.0).apply(x), x.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(aug(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0)).apply(x), x, atol=1e-5, rtol=0)
    assert torch.equal(aug(p=0.0, hflip=1.0, brightness=0.9).apply(x), x)  # p: the share of augmented images


def test_resized_crop_draws_one_window_per_sample_of_the_requested_area() -> None:
    x = ramp(b=64, size=32)
    out = aug(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0)).apply(x)
    # a quarter of the area at ratio 1 is a half-width window, stretched over the whole output
    span_x = out[:, 0, 0, -1] - out[:, 0, 0, 0]
    span_y = out[:, 1, -1, 0] - out[:, 1, 0, 0]
    torch.testing.assert_close(span_x, torch.full_like(span_x, 15 / 32), atol=0.02, rtol=0)
    torch.testing.assert_close(span_y, span_x, atol=0.02, rtol=0)
    left = out[:, 0, 0, 0]
    assert left.min() >= 0 and left.max() <= 0.5 + 1 / 64 + 1e-4 and left.unique().numel() > 5  # windows differ per sample


def test_affine_rotates_and_translates_within_the_given_ranges() -> None:
    x = ramp(b=32)
    shifted = aug(translate=0.25).apply(x)
    dx = (shifted[:, 0, 8, 8] - x[:, 0, 8, 8]).abs()
    assert dx.max() <= 0.25 + 1 / 16 and dx.max() > 0.05
    turned = aug(degrees=90.0).apply(ramp(b=32, size=33))
    assert not torch.allclose(turned, ramp(b=32, size=33), atol=1e-3)
    # the centre pixel stays where it is under a rotation about it
    torch.testing.assert_close(turned[:, :2, 16, 16], ramp(b=32, size=33)[:, :2, 16, 16], atol=1e-4, rtol=0)


def test_colour_jitter_grayscale_and_blur() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 3, 16, 16) * 0.35 + 0.25  # no clamping at 1 for factors up to 1.5
    out = aug(brightness=0.5).apply(x)
    ratio = out / x
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio), atol=1e-4)  # one factor per image
    assert ratio[:, 0, 0, 0].min() >= 0.5 - 1e-4 and ratio[:, 0, 0, 0].max() <= 1.5 + 1e-4
    assert ratio[:, 0, 0, 0].std() > 0.1
    gray = aug(grayscale=1.0).apply(x)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    torch.testing.assert_close(gray[:, 0], 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    sat0 = aug(saturation=1.0).apply(x)  # factors in [0, 2]: some images lose colour, some gain
    assert sat0.shape == x.shape
    blurred = aug(blur_p=1.0, blur_sigma=(2.0, 2.0)).apply(x)
    assert blurred.var() < 0.5 * x.var()
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02, rtol=0)
    sharp = aug(blur_p=1.0, blur_sigma=(1e-3, 1e-3)).apply(x)
    torch.testing.assert_close(sharp, x, atol=1e-5, rtol=0)


def test_batches_keep_absent_images_zero_and_are_reproducible() -> None:
    x = ramp(b=4)
    present = torch.tensor([[True, True], [False, True], [True, False], [True, True]])
    batch = Batch(inputs={"image": {"pixels": x * present[:, :1].view(-1, 1, 1, 1)}, "tabular": {"num": torch.ones(4, 2)}},
                  present=present, y=torch.zeros(4, dtype=torch.long), index=torch.arange(4))
    kw = {"crop_scale": (0.3, 1.0), "hflip": 0.5, "brightness": 0.4, "grayscale": 0.3}
    a = aug(1, **kw)(batch)
    assert torch.equal(a.inputs["image"]["pixels"][1], torch.zeros(3, 16, 16))
    assert a.inputs["tabular"] is batch.inputs["tabular"]
    b = aug(1, **kw)(batch)
    assert torch.equal(a.inputs["image"]["pixels"], b.inputs["image"]["pixels"])
    c = aug(2, **kw)(batch)
    assert not torch.equal(a.inputs["image"]["pixels"], c.inputs["image"]["pixels"])


def test_config_ranges_and_card_keys() -> None:
    for bad in ({"crop_scale": [0.9, 0.1]}, {"blur_kernel": 4}, {"hflip": 1.5}, {"rotate": 3}):
        with pytest.raises(ConfigError):
            validate(AugmentConfig, bad, "datasets/x.yaml: augment")
    quick = {"train.epochs": 1}
    spec = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0,
                   overrides={**quick, "dataset.augment.hflip": 0.5, "dataset.augment.crop_scale": [0.5, 1.0]})
    assert spec.dataset.augment == AugmentConfig(hflip=0.5, crop_scale=(0.5, 1.0))
    assert spec.to_dict()["dataset"]["augment"]["hflip"] == 0.5
    plain = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides=quick)
    assert plain.dataset.augment is None and plain.run_id != spec.run_id  # synthetic cards: off
    frozen = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0,
                     overrides={**quick, "dataset.augment.hflip": 0.5, "encoders.freeze": True})
    assert frozen.dataset.augment is None  # features computed once cannot be augmented
    with pytest.raises(ConfigError, match="augment.*unknown key 'flip'"):
        resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0, overrides={"dataset.augment.flip": 1})


def test_only_the_training_loader_augments(tmp_path) -> None:
    from mmbench import runner

    spec = resolve("late_fusion", "synthetic-tiny", MissingSpec("both", 0.5), 0,
                   overrides={"train.epochs": 1, "data.n_samples": 160, "dataset.augment.hflip": 1.0})
    info, splits, ceiling, fp = runner.load_data(spec, None)
    shared = runner._Shared(info, splits, ceiling, fp, torch.device("cpu"))
    presents, indices, _ = runner.presence_masks(spec, splits)
    loaders = runner._build_loaders(spec, shared, presents, indices, ("train", "val", "test"))
    assert isinstance(loaders["train"].augment, ImageAugment)
    assert loaders["val"].augment is None and loaders["test"].augment is None
    rec, _ = runner.execute(spec, tmp_path)
    assert rec.status == "ok" and rec.spec["dataset"]["augment"]["hflip"] == 1.0

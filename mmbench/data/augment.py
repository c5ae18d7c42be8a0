"""Training-time image augmentation on the device, per sample, on decoded batches.

:class:`ImageAugment` maps a training :class:`~mmbench.data.batch.Batch` (images already on the
device, normalised) to an augmented copy, with its own random generator on the device (seeded from
the run's training seed), so the loader stays a vectorised gather and the step never waits for the
host. Every sample draws its own parameters; one ``grid_sample`` does every geometric transform at
once, and the photometric ones are batched tensor arithmetic. Settings and their order:
:class:`~mmbench.data.augment_config.AugmentConfig`; semantics follow torchvision's
``RandomAffine``, ``RandomResizedCrop``, ``RandomHorizontalFlip``, ``ColorJitter`` (brightness,
contrast, saturation), ``RandomGrayscale`` and ``GaussianBlur``, with two simplifications: resampling
is bilinear without antialiasing, and the jitter order is fixed (brightness, contrast, saturation).
Absent images stay zero (the batch contract), and evaluation is never augmented.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import IMAGE
from ..errors import ConfigError
from .augment_config import AugmentConfig
from .batch import Batch

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


class ImageAugment:
    """Callable ``batch -> augmented batch`` for 2-D images ``B x C x H x W``."""

    def __init__(self, cfg: AugmentConfig, mean: float | Tensor, std: float | Tensor, device: torch.device | str,
                 seed: int) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(int(seed) * 7919 + 17)

    def _u(self, *shape: int, lo: float | Tensor = 0.0, hi: float | Tensor = 1.0) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=self.gen, device=self.device)

    def __call__(self, batch: Batch) -> Batch:
        """The batch with its images augmented (other inputs untouched)."""
        image = batch.inputs.get("image", {})
        x = image.get("pixels")
        if x is None:
            return batch
        if x.dim() != 4:
            raise ConfigError(f"dataset.augment: training-time augmentation is for 2-D images, got images of shape "
                              f"{tuple(x.shape[1:])}; remove augment: from the card")
        out = self.apply(x)
        out = out * batch.present[:, IMAGE].view(-1, 1, 1, 1).to(out.dtype)  # absent images stay zero
        return replace(batch, inputs={**batch.inputs, "image": {**image, "pixels": out}})

    def apply(self, x: Tensor) -> Tensor:
        """Augment normalised images ``x`` (each sample with probability ``p``)."""
        cfg = self.cfg
        B = x.shape[0]
        x01 = x.float() * self.std + self.mean
        theta = self._geometry(B, x.shape[-2], x.shape[-1])
        if theta is not None:
            grid = F.affine_grid(theta, list(x01.shape), align_corners=False)
            # RandomAffine fills the outside with black; a crop stays inside (its edge pixels replicate)
            affine = cfg.degrees or cfg.translate or cfg.scale is not None
            x01 = F.grid_sample(x01, grid, mode="bilinear", padding_mode="zeros" if affine else "border",
                                align_corners=False)
        x01 = self._photometric(x01)
        y = (x01 - self.mean) / self.std
        apply = (self._u(B) < cfg.p).view(-1, 1, 1, 1)
        return torch.where(apply, y.to(x.dtype), x)

    # ------------------------------------------------------------------------------------ geometry
    def _crop_boxes(self, B: int, H: int, W: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """RandomResizedCrop boxes (centre x, centre y, width, height in pixels): ten tries per sample,
        the first that fits, else torchvision's fallback (the whole image, ratio clamped)."""
        cfg = self.cfg
        assert cfg.crop_scale is not None
        tries = 10
        area = self._u(B, tries, lo=cfg.crop_scale[0], hi=cfg.crop_scale[1]) * (H * W)
        log_r = self._u(B, tries, lo=math.log(cfg.crop_ratio[0]), hi=math.log(cfg.crop_ratio[1]))
        aspect = log_r.exp()
        w = (area * aspect).sqrt().round()
        h = (area / aspect).sqrt().round()
        ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
        first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), torch.full((B,), -1, device=self.device))
        in_ratio = W / H
        if in_ratio < cfg.crop_ratio[0]:
            fw, fh = W, round(W / cfg.crop_ratio[0])
        elif in_ratio > cfg.crop_ratio[1]:
            fw, fh = round(H * cfg.crop_ratio[1]), H
        else:
            fw, fh = W, H
        pick = first.clamp_min(0).unsqueeze(1)
        w = torch.where(first >= 0, w.gather(1, pick).squeeze(1), torch.full((B,), float(fw), device=self.device))
        h = torch.where(first >= 0, h.gather(1, pick).squeeze(1), torch.full((B,), float(fh), device=self.device))
        left = torch.floor(self._u(B) * (W - w + 1))
        top = torch.floor(self._u(B) * (H - h + 1))
        left = torch.where(first >= 0, left, (W - w) / 2)
        top = torch.where(first >= 0, top, (H - h) / 2)
        return left + w / 2 - W / 2, top + h / 2 - H / 2, w, h

    def _geometry(self, B: int, H: int, W: int) -> Tensor | None:
        """Per-sample ``2 x 3`` sampling matrices (output -> input, normalised coordinates), or None."""
        cfg = self.cfg
        if cfg.crop_scale is None and cfg.hflip == 0 and cfg.degrees == 0 and cfg.translate == 0 and cfg.scale is None:
            return None
        dev = self.device
        one = torch.ones(B, device=dev)
        # flip, then the crop's resize (q'' = S_c F q + c), then the inverse affine: p = R(-a) (q'' - t) / s
        fx = torch.where(self._u(B) < cfg.hflip, -one, one)
        if cfg.crop_scale is not None:
            cx, cy, w, h = self._crop_boxes(B, H, W)
            sx, sy = w / W, h / H
        else:
            cx = cy = torch.zeros(B, device=dev)
            sx = sy = one
        angle = self._u(B, lo=-cfg.degrees, hi=cfg.degrees) * (math.pi / 180)
        zoom = self._u(B, lo=cfg.scale[0], hi=cfg.scale[1]) if cfg.scale is not None else one
        tx = self._u(B, lo=-cfg.translate, hi=cfg.translate) * W
        ty = self._u(B, lo=-cfg.translate, hi=cfg.translate) * H
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        # pixel-space linear part A = R(-a)/s @ diag(sx * fx, sy), offset b = R(-a)/s @ (c - t)
        a11, a12 = cos * sx * fx, sin * sy
        a21, a22 = -sin * sx * fx, cos * sy
        bx, by = cos * (cx - tx) + sin * (cy - ty), -sin * (cx - tx) + cos * (cy - ty)
        # normalised coordinates: u = x / (W/2), v = y / (H/2)
        theta = torch.stack([torch.stack([a11, a12 * H / W, bx * 2 / W], dim=1),
                             torch.stack([a21 * W / H, a22, by * 2 / H], dim=1)], dim=1)
        return theta

    # --------------------------------------------------------------------------------- photometric
    @staticmethod
    def _gray(x: Tensor) -> Tensor:
        if x.shape[1] != 3:
            return x.mean(dim=1, keepdim=True)
        w = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)

    def _factor(self, B: int, strength: float) -> Tensor:
        return self._u(B, lo=max(0.0, 1 - strength), hi=1 + strength).view(-1, 1, 1, 1)

    def _photometric(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        B = x.shape[0]
        if cfg.brightness or cfg.contrast or cfg.saturation:
            jitter = (self._u(B) < cfg.jitter_p).view(-1, 1, 1, 1)
            y = x
            if cfg.brightness:
                y = (y * self._factor(B, cfg.brightness)).clamp(0, 1)
            if cfg.contrast:
                m = self._gray(y).mean(dim=(1, 2, 3), keepdim=True)
                y = (m + self._factor(B, cfg.contrast) * (y - m)).clamp(0, 1)
            if cfg.saturation and y.shape[1] == 3:
                g = self._gray(y)
                y = (g + self._factor(B, cfg.saturation) * (y - g)).clamp(0, 1)
            x = torch.where(jitter, y, x)
        if cfg.grayscale:
            gray = (self._u(B) < cfg.grayscale).view(-1, 1, 1, 1)
            x = torch.where(gray, self._gray(x).expand_as(x), x)
        if cfg.blur_p:
            x = torch.where((self._u(B) < cfg.blur_p).view(-1, 1, 1, 1), self._blur(x), x)
        return x

    def _blur(self, x: Tensor) -> Tensor:
        """Gaussian blur with a per-sample sigma (separable, reflect padding); the kernel is shrunk to fit
        small images."""
        B, C, H, W = x.shape
        k = min(self.cfg.blur_kernel, 2 * min(H, W) - 1)
        k = k if k % 2 else k - 1
        sigma = self._u(B, lo=self.cfg.blur_sigma[0], hi=self.cfg.blur_sigma[1])
        r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
        kern = torch.exp(-(r.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
        kern = (kern / kern.sum(dim=1, keepdim=True)).repeat_interleave(C, dim=0)  # (B*C) x k
        y = x.reshape(1, B * C, H, W)
        y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), kern.view(B * C, 1, 1, k), groups=B * C)
        y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), kern.view(B * C, 1, k, 1), groups=B * C)
        return y.view(B, C, H, W)

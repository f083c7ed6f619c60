"""Data augmentation of training batches, in Keras's vocabulary: `GaussianNoise(stddev)` for
any data, `RandomFlip`, `RandomTranslation`, `RandomRotation` and `RandomZoom` for images.

Applied per mini-batch to the device tensors of the training split only (never validation or
test), drawn from the trial's own generator on the training device, whose state the resume
checkpoint keeps: a trial is reproducible, and a resumed one continues the same sequence.

The geometric layers follow Keras's defaults and ranges (`fill_mode="reflect"`, bilinear
interpolation): a translation factor f shifts by a fraction of the height/width drawn from
[-f, f], a rotation factor f turns by an angle drawn from [-f·2π, f·2π] (positive:
counter-clockwise), a zoom factor f scales by 1 + z with z from [-f, f] for both axes
(positive: zoom out), each drawn per image; a flip mirrors each image with probability ½
per axis named. Where Keras would resample once per stacked layer, the translation,
rotation and zoom here are composed into one affine map and sampled once (one bilinear pass,
less blur); `fill_mode="reflect"` (d c b a | a b c d | d c b a) is torch's `reflection`
padding with `align_corners=False`.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from trainer.config import AugmentationConfig, FlipMode

_SEED_SALT = 0x5EED_A06
"""Keeps the augmentation stream apart from the shuffling stream of the same seed."""


class Augmenter:
    """Augments training batches with its own generator on the training device."""

    def __init__(self, config: AugmentationConfig, seed: int, device: torch.device) -> None:
        self.config = config
        self.generator = torch.Generator(device=device).manual_seed(seed ^ _SEED_SALT)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.needs_images and x.dim() != 4:
            raise ValueError(
                f"image augmentation needs (batch, channels, height, width) inputs, got "
                f"{tuple(x.shape)}"
            )
        if config.random_flip != "none":
            x = random_flip(x, config.random_flip, self.generator)
        if config.geometric:
            x = affine(x, *self._draw_affine(len(x), x.device))
        if config.gaussian_noise > 0:
            noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            x = x + config.gaussian_noise * noise
        return x

    def _draw_affine(
        self, n: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        config = self.config
        shifts = _symmetric((n, 2), config.random_translation, self.generator, device)
        angles = _symmetric((n,), config.random_rotation * 2 * math.pi, self.generator, device)
        zooms = 1.0 + _symmetric((n,), config.random_zoom, self.generator, device)
        return shifts, angles, zooms

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def _symmetric(
    shape: tuple[int, ...], bound: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Uniform draws from [-bound, bound] (zeros, drawing nothing, when bound is 0)."""
    if bound == 0:
        return torch.zeros(shape, device=device)
    return (torch.rand(shape, generator=generator, device=device) * 2 - 1) * bound


def random_flip(x: torch.Tensor, mode: FlipMode, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored with probability ½ along each axis `mode` names."""
    axes = {"horizontal": (-1,), "vertical": (-2,), "horizontal_and_vertical": (-1, -2)}
    for axis in axes.get(mode, ()):
        flip = torch.rand((len(x), 1, 1, 1), generator=generator, device=x.device) < 0.5
        x = torch.where(flip, x.flip(axis), x)
    return x


def affine(
    x: torch.Tensor, shifts: torch.Tensor, angles: torch.Tensor, zooms: torch.Tensor
) -> torch.Tensor:
    """Each image shifted by `shifts` (fractions of height, width: positive moves the content
    down and right), turned by `angles` (radians, counter-clockwise) and zoomed by `zooms`
    (above 1: out), about its centre; reflected where the map leaves the image."""
    height, width = x.shape[-2:]
    cos, sin = torch.cos(angles), torch.sin(angles)
    # Output pixel p (centred, y down) samples the input at R(−θ)·z·p − shift, written in
    # affine_grid's coordinates, which run over [-1, 1] along each axis (hence the aspect).
    aspect = width / height
    theta = torch.zeros((len(x), 2, 3), device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = zooms * cos
    theta[:, 0, 1] = -zooms * sin / aspect
    theta[:, 1, 0] = zooms * sin * aspect
    theta[:, 1, 1] = zooms * cos
    theta[:, 0, 2] = -2 * shifts[:, 1]
    theta[:, 1, 2] = -2 * shifts[:, 0]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

"""Keras layers with Keras's numbers, for the built-in networks and for plugin models.

`Dropout` is Keras's inverted dropout with `nn.Dropout`'s interface; on the CPU its masks come
from `dropout_noise`, which both a lone trial and a pack member (`trainer.packing`) draw, so a
member's masks equal its lone run's.

`BatchNormalization` is written here rather than taken from `torch.nn.BatchNorm*d` because the
two differ in what a user of Keras's vocabulary would notice: Keras's `momentum` is the share
of the old moving statistics kept (0.99), torch's the share of the new batch (0.1); Keras's
default `epsilon` is 1e-3, torch's 1e-5; and Keras updates the moving variance with the
batch's *biased* variance where torch uses the unbiased one. Training normalizes with the
batch's biased statistics in both.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_INT16_MIN = -(2**15)
_ELEMENTS_PER_WORD = 4  # 16-bit numbers in a 64-bit draw
_INT64_MIN = -(2**63)


def dropout_noise(
    shape: torch.Size | tuple[int, ...],
    rate: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Keras's inverted-dropout noise: each element `1 / (1 - rate)` with probability
    `1 - rate`, else 0 (the input times it is `Dropout(rate)`'s training output).

    Written by hand because torch's CPU `bernoulli_` (behind `nn.Dropout`) costs ~15 ns per
    element on one core, a fifth of a packed trial's step (bench/README.md): here each element
    is 16 random bits (`dropout_bits`, about 2 ns) kept when at or above
    `dropout_threshold(rate)`. Sixteen bits set the keep probability to within 2⁻¹⁷ of
    `1 - rate` (Keras compares a float32 uniform number; no one trains on the difference),
    and cost half the random draws of 32.
    Draws from `generator` (None: the global one, which `seed_everything` seeds)."""
    count = math.prod(shape)
    bits = torch.empty(dropout_words(count), dtype=torch.int64, device=device)
    dropout_bits(bits, generator)
    elements = dropout_elements(bits, count).view(shape)
    return dropout_scaled(elements, dropout_threshold(rate) - 1.0, 1.0 / (1.0 - rate), dtype)


def dropout_scaled(
    elements: torch.Tensor,
    below: torch.Tensor | float,
    scale: torch.Tensor | float,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The noise of int16 random `elements`: `scale` where an element is at or above its
    threshold, else 0, given `below = threshold - 1` (a number, or a float32 tensor that
    broadcasts, as `scale` may).

    Computed as `clamp(elements - below, 0, 1) · scale` in float32, exact for these integers
    (below 2**17 in size): torch's CPU comparison into booleans runs element by element
    (about 0.5 ns each), these three vectorized passes take 2.4x less (bench/README.md)."""
    keep = elements.to(torch.float32).sub_(below).clamp_(0.0, 1.0)
    if dtype != torch.float32:
        keep = keep.to(dtype)
    return keep.mul_(scale)


def dropout_words(count: int) -> int:
    """How many 64-bit words hold the random bits of `count` dropout decisions."""
    return (count + _ELEMENTS_PER_WORD - 1) // _ELEMENTS_PER_WORD


def dropout_elements(words: torch.Tensor, count: int) -> torch.Tensor:
    """The first `count` elements' random numbers in `words` (the last dimension), as int16."""
    return words.view(torch.int16)[..., :count]


def dropout_bits(words: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """Fills the int64 tensor `words` with random bits over their full range (one draw per
    word); viewed as int16, each quarter is one element's uniform 16-bit number."""
    words.random_(_INT64_MIN, None, generator=generator)


def dropout_threshold(rate: float) -> int:
    """The int16 at or above which an element is kept: `P(keep) = 1 - rate` (to 2**-17)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    return _INT16_MIN + min(round(rate * 2**16), 2**16 - 1)


class Dropout(nn.Dropout):
    """`keras.layers.Dropout(rate)`: in training each unit is zeroed with probability `rate`
    and the kept ones are scaled by `1 / (1 - rate)`; at inference the identity. On the CPU
    the mask is `dropout_noise`'s (from the global generator); on an accelerator torch's
    fused dropout kernel draws it (same distribution)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return input
        if input.device.type != "cpu":
            return F.dropout(input, self.p, True, self.inplace)
        noise = dropout_noise(input.shape, self.p, device=input.device, dtype=input.dtype)
        return input.mul_(noise) if self.inplace else input * noise


class BatchNormalization(nn.Module):
    """`keras.layers.BatchNormalization(momentum, epsilon)` over dimension 1 of its input
    (the features of `(N, F)`, the channels of `(N, C, ...)`).

    Training: `y = γ·(x − μ_B)/√(σ²_B + ε) + β` with the batch's mean and biased variance, and
    `moving = momentum·moving + (1 − momentum)·batch` for both statistics. Inference: the same
    with the moving statistics. γ starts at 1, β at 0, the moving mean at 0 and the moving
    variance at 1, as in Keras; γ and β are not kernels, so no regularizer or initializer of
    the spec touches them.
    """

    features: int
    momentum: float
    epsilon: float
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, features: int, momentum: float = 0.99, epsilon: float = 1e-3) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if epsilon <= 0.0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.features = features
        self.momentum = momentum
        self.epsilon = epsilon
        self.weight = nn.Parameter(torch.ones(features))  # Keras's gamma
        self.bias = nn.Parameter(torch.zeros(features))  # Keras's beta
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))
        self._batch_mean: torch.Tensor
        self._batch_var: torch.Tensor
        self.register_buffer("_batch_mean", torch.zeros(features), persistent=False)
        self.register_buffer("_batch_var", torch.zeros(features), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.features:
            raise ValueError(
                f"BatchNormalization({self.features}) got inputs shaped {tuple(x.shape)}"
            )
        if not self.training:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                eps=self.epsilon,
            )
        values_per_feature = x.numel() // self.features
        if values_per_feature < 2:  # torch's kernel refuses one value per feature; Keras not
            return self._normalize_one(x)
        # torch's fused kernel normalizes with the batch's biased statistics as Keras does and
        # writes the batch's mean and *unbiased* variance into the scratch buffers (momentum 1
        # replaces their content); the moving statistics are then moved as Keras moves them.
        out = F.batch_norm(
            x,
            self._batch_mean,
            self._batch_var,
            self.weight,
            self.bias,
            training=True,
            momentum=1.0,
            eps=self.epsilon,
        )
        with torch.no_grad():
            kept = self.momentum
            biased = (values_per_feature - 1) / values_per_feature
            self.running_mean.mul_(kept).add_(self._batch_mean, alpha=1.0 - kept)
            self.running_var.mul_(kept).add_(self._batch_var, alpha=(1.0 - kept) * biased)
        return out

    def _normalize_one(self, x: torch.Tensor) -> torch.Tensor:
        """A batch with one value per feature: it normalizes to β, its variance is 0."""
        mean = x.mean(dim=0, keepdim=True)
        with torch.no_grad():
            kept = self.momentum
            self.running_mean.mul_(kept).add_(mean.detach().flatten(), alpha=1.0 - kept)
            self.running_var.mul_(kept)
        shape = (1, self.features) + (1,) * (x.dim() - 2)
        scale = self.weight.view(shape) / math.sqrt(self.epsilon)
        normalized: torch.Tensor = (x - mean) * scale + self.bias.view(shape)
        return normalized

    def extra_repr(self) -> str:
        return f"{self.features}, momentum={self.momentum}, epsilon={self.epsilon}"

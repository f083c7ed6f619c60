"""Keras layers with Keras's numbers, for the built-in networks and for plugin models.

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

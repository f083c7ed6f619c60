"""The pack's MLP arithmetic: batched Linear layers over a leading member axis, a ReLU MLP
with its backward written out, and the cross-entropy's gradient by hand.

Each is the arithmetic a lone trial's layers do (`F.linear`, `relu`, the dropout noise's
product, the cross-entropy then the batch mean), member by member, in one batched kernel per
operation. The by-hand parts exist because on the CPU the autograd engine's and Python's
cost per graph node is a fair share of a small pack's step; torch has no fused MLP kernel
with per-member weights to call instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F


class StackedLinear(torch.autograd.Function):
    """`bias + x @ weight.mT` for every member at once (one batched matmul). Its backward
    computes each weight's gradient as `grad.mT @ x`, as `F.linear`'s backward does for a
    lone trial: in the weight's own (out, in) layout, so it becomes `.grad` as it is, where
    autograd's gradient of `weight.mT` would be copied through a transpose."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.mT)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.mT, x), grad.sum(dim=1)


def relu_mlp_forward(
    x: torch.Tensor, noises: list[torch.Tensor | None], params: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`Linear → ReLU → · noise` per hidden layer, then a Linear: the outputs, and each
    layer's input (what `relu_mlp_backward` needs). Activations are computed in place."""
    layers = len(params) // 2
    inputs = [x]
    hidden = x
    for layer in range(layers):
        weight, bias = params[2 * layer], params[2 * layer + 1]
        hidden = torch.baddbmm(bias.unsqueeze(1), hidden, weight.mT)
        if layer == layers - 1:
            break
        hidden.relu_()
        noise = noises[layer]
        if noise is not None:
            hidden.mul_(noise)
        inputs.append(hidden)
    return hidden, inputs


def relu_mlp_backward(
    grad: torch.Tensor,
    inputs: list[torch.Tensor],
    noises: list[torch.Tensor | None],
    params: list[torch.Tensor] | tuple[torch.Tensor, ...],
) -> list[torch.Tensor]:
    """The gradients of every weight and bias (in `params`' order) from the outputs' `grad`:
    autograd's products through the same layers. Backward through a hidden layer is
    `grad · noise`, then zero where the unit's output is 0 (`threshold_backward`, as ReLU's
    own backward on `relu(z)`: where the noise is 0 the product is already 0)."""
    layers = len(inputs)
    grads: list[torch.Tensor] = [grad] * (2 * layers)  # (placeholders, all overwritten)
    for layer in reversed(range(layers)):
        # the weight's gradient in its own (out, in) layout, as F.linear's backward
        grads[2 * layer] = torch.bmm(grad.mT, inputs[layer])
        grads[2 * layer + 1] = grad.sum(dim=1)
        if layer == 0:
            break
        grad = torch.bmm(grad, params[2 * layer])
        noise = noises[layer - 1]
        if noise is not None:
            grad.mul_(noise)
        grad = torch.ops.aten.threshold_backward(grad, inputs[layer], 0)
    return grads


class ReluMLP(torch.autograd.Function):
    """The members' ReLU MLP (`relu_mlp_forward`) as one autograd node with its backward
    written out (`relu_mlp_backward`), where autograd would make three per layer: for losses
    and regularizers whose gradient autograd computes."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, noises: list[torch.Tensor | None], *params: torch.Tensor
    ) -> torch.Tensor:
        output, inputs = relu_mlp_forward(x, noises, list(params))
        ctx.save_for_backward(*inputs, *params)
        ctx.noises = noises
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        layers = len(ctx.noises) + 1
        saved = ctx.saved_tensors
        grads = relu_mlp_backward(grad, list(saved[:layers]), ctx.noises, saved[layers:])
        return (None, None, *grads)


def cross_entropy_by_hand(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's batch-mean cross-entropy (members, batch, classes logits; members, batch
    labels), and its gradient with respect to the logits: the values
    `losses.sparse_categorical_crossentropy` then `.mean(dim=1)` and autograd's backward
    through them give, with the log-softmax taken classes-first as there. That backward is
    `g - exp(log_softmax) · sum(g)` with `g = -1/B` at each row's label (`nll_loss`'s
    backward of the mean's `1/B`), through the kernel autograd calls. The gradient is a
    (members, batch, classes) view of a classes-first tensor."""
    log_probabilities = torch.log_softmax(logits.mT.contiguous(), dim=1)
    picked = log_probabilities.gather(1, labels.unsqueeze(1))
    loss = picked.squeeze(1).neg().mean(dim=1)
    share = 1.0 / labels.shape[1]
    upstream = torch.zeros_like(log_probabilities).scatter_(1, labels.unsqueeze(1), -share)
    grad = torch.ops.aten._log_softmax_backward_data(upstream, log_probabilities, 1, logits.dtype)
    return loss, grad.mT


def mean_squared_error_by_hand(
    outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's mean squared error over its batch and output columns (members, batch,
    outputs), and its gradient with respect to the outputs, `2 (outputs - targets) / (B·O)`:
    what `F.mse_loss` then the mean and autograd's backward through them give, through the
    kernel autograd calls."""
    loss = F.mse_loss(outputs, targets, reduction="none").flatten(1).mean(dim=1)
    share = torch.full_like(outputs, 1.0 / outputs[0].numel())  # the mean's backward
    grad = torch.ops.aten.mse_loss_backward(share, outputs, targets, 0)  # 0: no reduction
    return loss, grad


LossByHand = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Outputs and targets to each member's data loss and the loss's gradient (the outputs')."""

LOSSES_BY_HAND: dict[str, LossByHand] = {
    "sparse_categorical_crossentropy": cross_entropy_by_hand,
    "mean_squared_error": mean_squared_error_by_hand,
}
"""The losses whose gradient a pack's step computes without autograd, by canonical name."""

"""The data loss of a trial, by Keras name: what training minimizes before any penalty.

Keras's definitions, which torch's functions match exactly for these shapes:
- `sparse_categorical_crossentropy` (classification): mean over the batch of -log softmax(z)_y.
- `mean_squared_error` / `mse`: mean of (ŷ - y)² over the batch and the target columns.
- `mean_absolute_error` / `mae`: mean of |ŷ - y|.
- `huber` (δ = 1, Keras's default): mean of ½e² where |e| ≤ δ, else δ(|e| - ½δ).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from trainer.contracts import Task

if TYPE_CHECKING:
    import torch

LossFunction = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]

_TASK_OF: dict[str, Task] = {
    "sparse_categorical_crossentropy": "classification",
    "mean_squared_error": "regression",
    "mean_absolute_error": "regression",
    "huber": "regression",
}
_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "huber_loss": "huber"}
DEFAULT_LOSS: dict[Task, str] = {
    "classification": "sparse_categorical_crossentropy",
    "regression": "mean_squared_error",
}


def canonical_loss(name: str) -> str:
    canonical = _ALIASES.get(name, name)
    if canonical not in _TASK_OF:
        known = sorted([*_TASK_OF, *_ALIASES])
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(known)}")
    return canonical


def resolve_loss(name: str | None, task: Task) -> str:
    """The loss a trial trains with; a loss of the other task is refused."""
    if name is None:
        return DEFAULT_LOSS[task]
    canonical = canonical_loss(name)
    if _TASK_OF[canonical] != task:
        raise ValueError(
            f"loss {name!r} is for {_TASK_OF[canonical]}, but the dataset is a {task} task; "
            f"use {', '.join(k for k, v in _TASK_OF.items() if v == task)}"
        )
    return canonical


def sparse_categorical_crossentropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """`F.cross_entropy(logits, labels)`, with the log-softmax of (batch, classes) logits
    taken classes-first: on a contiguous (classes, batch) copy, over its first dimension.

    Why: torch's CPU log-softmax along a short last dimension (10 classes) costs about 12 ns
    an element, along the first of the classes-first copy about 1 ns (it vectorizes over the
    batch). A pack's step (`trainer.packed_mlp`) takes the same kernel in the same layout, so
    a member's loss gradient rounds as its lone run's."""
    import torch
    from torch.nn import functional as F

    if logits.dim() != 2:
        return F.cross_entropy(logits, labels, reduction=reduction)
    log_probabilities = torch.log_softmax(logits.T.contiguous(), dim=0).T
    return F.nll_loss(log_probabilities, labels, reduction=reduction)


def loss_function(name: str) -> LossFunction:
    from torch.nn import functional as F

    functions: dict[str, LossFunction] = {
        "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
        "mean_squared_error": F.mse_loss,
        "mean_absolute_error": F.l1_loss,
        "huber": lambda prediction, target: F.huber_loss(prediction, target, delta=1.0),
    }
    return functions[canonical_loss(name)]


def per_member_loss(name: str) -> LossFunction:
    """`loss_function(name)` for a pack (`trainer.packing`): outputs and targets carry a
    leading member axis, and each member gets its own batch mean (a vector, one per member)."""
    import torch
    from torch.nn import functional as F

    def flat(
        function: Callable[..., torch.Tensor],
    ) -> LossFunction:
        def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return function(outputs, targets, reduction="none").flatten(1).mean(dim=1)

        return loss

    def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # classes first, member by member, as `sparse_categorical_crossentropy` for one
        log_probabilities = torch.log_softmax(logits.mT.contiguous(), dim=1)
        return F.nll_loss(log_probabilities, labels, reduction="none").mean(dim=1)

    functions: dict[str, LossFunction] = {
        "sparse_categorical_crossentropy": cross_entropy,
        "mean_squared_error": flat(F.mse_loss),
        "mean_absolute_error": flat(F.l1_loss),
        "huber": flat(lambda p, t, reduction: F.huber_loss(p, t, reduction=reduction, delta=1.0)),
    }
    return functions[canonical_loss(name)]

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


def loss_function(name: str) -> LossFunction:
    from torch.nn import functional as F

    functions: dict[str, LossFunction] = {
        "sparse_categorical_crossentropy": F.cross_entropy,
        "mean_squared_error": F.mse_loss,
        "mean_absolute_error": F.l1_loss,
        "huber": lambda prediction, target: F.huber_loss(prediction, target, delta=1.0),
    }
    return functions[canonical_loss(name)]


def per_member_loss(name: str) -> LossFunction:
    """`loss_function(name)` for a pack (`trainer.packing`): outputs and targets carry a
    leading member axis, and each member gets its own batch mean (a vector, one per member)."""
    from torch.nn import functional as F

    def flat(
        function: Callable[..., torch.Tensor],
    ) -> LossFunction:
        def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return function(outputs, targets, reduction="none").flatten(1).mean(dim=1)

        return loss

    def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        members = logits.shape[0]
        per_row = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        return per_row.view(members, -1).mean(dim=1)

    functions: dict[str, LossFunction] = {
        "sparse_categorical_crossentropy": cross_entropy,
        "mean_squared_error": flat(F.mse_loss),
        "mean_absolute_error": flat(F.l1_loss),
        "huber": flat(lambda p, t, reduction: F.huber_loss(p, t, reduction=reduction, delta=1.0)),
    }
    return functions[canonical_loss(name)]

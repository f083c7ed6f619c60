"""Metric names, in Keras's vocabulary, and the direction in which each one improves.

`loss` and `val_loss` include the regularization penalty, as Keras reports them;
`data_loss` and `val_data_loss` are the same loss without it (the loss function alone, Keras's
loss metric such as `val_sparse_categorical_crossentropy`, under one name for every loss and
task): what a search over regularizers and their strength should compare, since the penalty
grows with λ whatever the fit. `accuracy` is the fraction of correct class predictions
(classification), `mae` the mean absolute error (regression). Training metrics are the mean
over the epoch's mini-batches (dropout active), validation metrics are computed at the end of
the epoch.
"""

from __future__ import annotations

from typing import Literal

from trainer.contracts import Task

LOSS = "loss"
ACCURACY = "accuracy"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
DATA_LOSS = "data_loss"
VAL_DATA_LOSS = "val_data_loss"
MAE = "mae"
VAL_MAE = "val_mae"
LEARNING_RATE = "lr"

EPOCH_METRICS: tuple[str, ...] = (
    LOSS,
    ACCURACY,
    VAL_LOSS,
    VAL_ACCURACY,
    MAE,
    VAL_MAE,
    DATA_LOSS,
    VAL_DATA_LOSS,
)
"""What a trial can monitor (objective, EarlyStopping, ModelCheckpoint)."""

TASK_METRICS: dict[Task, tuple[str, ...]] = {
    "classification": (LOSS, ACCURACY, VAL_LOSS, VAL_ACCURACY, DATA_LOSS, VAL_DATA_LOSS),
    "regression": (LOSS, MAE, VAL_LOSS, VAL_MAE, DATA_LOSS, VAL_DATA_LOSS),
}
"""The epoch metrics each task has."""


def check_metric_for_task(metric: str, task: Task, what: str = "objective") -> None:
    """Refuse a metric the task does not have (val_accuracy on a regression dataset)."""
    if metric not in TASK_METRICS[task]:
        raise ValueError(
            f"{what} {metric!r} is not a metric of a {task} task; "
            f"use one of {', '.join(TASK_METRICS[task])}"
        )


Mode = Literal["auto", "min", "max"]
Direction = Literal["min", "max"]

_DIRECTIONS: dict[str, Direction] = {
    "loss": "min",
    "accuracy": "max",
    "mae": "min",
    "data_loss": "min",
}


def resolve_mode(monitor: str, mode: Mode) -> Direction:
    """Keras's `mode="auto"`: the direction is read from the metric name (`val_` prefix dropped)."""
    if mode != "auto":
        return mode
    direction = _DIRECTIONS.get(monitor.removeprefix("val_"))
    if direction is None:
        raise ValueError(
            f"cannot tell whether {monitor!r} should be minimized or maximized; "
            f"set mode to 'min' or 'max' (known metrics: {', '.join(EPOCH_METRICS)})"
        )
    return direction

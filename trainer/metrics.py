"""Metric names, in Keras's vocabulary, and the direction in which each one improves.

`loss` and `val_loss` include the regularization penalty, as Keras reports them; `accuracy`
is the fraction of correct class predictions. Training metrics are the mean over the epoch's
mini-batches (dropout active), validation metrics are computed at the end of the epoch.
"""

from __future__ import annotations

from typing import Literal

LOSS = "loss"
ACCURACY = "accuracy"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
LEARNING_RATE = "lr"

EPOCH_METRICS: tuple[str, ...] = (LOSS, ACCURACY, VAL_LOSS, VAL_ACCURACY)
"""What a trial can monitor (objective, EarlyStopping, ModelCheckpoint)."""

Mode = Literal["auto", "min", "max"]
Direction = Literal["min", "max"]

_DIRECTIONS: dict[str, Direction] = {"loss": "min", "accuracy": "max"}


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

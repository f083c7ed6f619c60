"""EarlyStopping and ModelCheckpoint decisions, checked against Keras's own callbacks.

Both implementations are driven with the same scripted metric sequences; every per-epoch
decision and the final state must agree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer.callbacks import KerasEarlyStopping, KerasModelCheckpoint
from trainer.config import CheckpointConfig, EarlyStoppingConfig

os.environ.setdefault("KERAS_BACKEND", "torch")
import keras


class _KerasModelStub:
    """What Keras's callbacks touch on a model: weights, stop_training, metrics."""

    def __init__(self) -> None:
        self.stop_training = False
        self.epoch = -1
        self.restored: int | None = None
        self.metrics: list[Any] = []

    def get_weights(self) -> int:
        return self.epoch  # the "weights" are the epoch they were taken at

    def set_weights(self, weights: int) -> None:
        self.restored = weights


def _run_keras(values: list[float], monitor: str, **kwargs: Any) -> tuple[list[bool], Any, Any]:
    callback = keras.callbacks.EarlyStopping(monitor=monitor, **kwargs)
    model = _KerasModelStub()
    callback.set_model(model)
    callback.on_train_begin()
    stops = []
    for epoch, value in enumerate(values):
        model.epoch = epoch
        callback.on_epoch_end(epoch, {monitor: value})
        stops.append(model.stop_training)
        if model.stop_training:
            break
    callback.on_train_end()
    return stops, callback, model.restored


def _run_ours(
    values: list[float], monitor: str, **kwargs: Any
) -> tuple[list[bool], KerasEarlyStopping, int | None]:
    callback = KerasEarlyStopping(EarlyStoppingConfig(monitor=monitor, **kwargs))
    stops = []
    for epoch, value in enumerate(values):

        def weights(epoch: int = epoch) -> dict[str, torch.Tensor]:
            return {"epoch": torch.tensor(epoch)}

        stop = callback.update(epoch, {monitor: value}, weights)
        stops.append(stop)
        if stop:
            break
    restored = None
    if kwargs.get("restore_best_weights") and callback.best_weights is not None:
        restored = int(callback.best_weights["epoch"])
    return stops, callback, restored


DECREASING_THEN_FLAT = [1.0, 0.8, 0.7, 0.69, 0.695, 0.7, 0.71, 0.72, 0.73, 0.74]
NOISY = [0.9, 0.95, 0.85, 0.86, 0.84, 0.9, 0.91, 0.83, 0.99, 1.0, 1.1, 1.2]
RISING_ACCURACY = [0.5, 0.6, 0.7, 0.69, 0.71, 0.71, 0.70, 0.69, 0.68, 0.6]

CASES: list[tuple[list[float], str, dict[str, Any]]] = [
    (DECREASING_THEN_FLAT, "val_loss", {}),
    (DECREASING_THEN_FLAT, "val_loss", {"patience": 2}),
    (DECREASING_THEN_FLAT, "val_loss", {"patience": 3, "restore_best_weights": True}),
    (DECREASING_THEN_FLAT, "val_loss", {"patience": 1, "min_delta": 0.05}),
    (DECREASING_THEN_FLAT, "val_loss", {"patience": 2, "baseline": 0.75}),
    (DECREASING_THEN_FLAT, "val_loss", {"patience": 2, "baseline": 0.5}),
    (DECREASING_THEN_FLAT, "val_loss", {"patience": 2, "start_from_epoch": 4}),
    (NOISY, "val_loss", {"patience": 2, "restore_best_weights": True}),
    (NOISY, "val_loss", {"patience": 3, "min_delta": 0.02, "restore_best_weights": True}),
    (NOISY, "val_loss", {"patience": 20, "restore_best_weights": True}),
    (NOISY, "val_loss", {"patience": 2, "mode": "max"}),
    (RISING_ACCURACY, "val_accuracy", {"patience": 2, "mode": "max"}),
    (RISING_ACCURACY, "val_accuracy", {"patience": 1, "mode": "max", "restore_best_weights": True}),
    (RISING_ACCURACY, "val_accuracy", {"patience": 3, "mode": "max", "min_delta": 0.015}),
    (RISING_ACCURACY, "val_accuracy", {"patience": 2, "mode": "max", "baseline": 0.8}),
]


@pytest.mark.parametrize(("values", "monitor", "kwargs"), CASES)
def test_early_stopping_decides_as_keras_does(
    values: list[float], monitor: str, kwargs: dict[str, Any]
) -> None:
    keras_stops, keras_cb, keras_restored = _run_keras(values, monitor, **kwargs)
    our_stops, ours, our_restored = _run_ours(values, monitor, **kwargs)
    assert our_stops == keras_stops
    assert ours.wait == keras_cb.wait
    assert ours.best == keras_cb.best
    assert ours.best_epoch == keras_cb.best_epoch
    assert ours.stopped_epoch == keras_cb.stopped_epoch
    assert our_restored == keras_restored


def test_patience_zero_stops_at_the_first_epoch_without_improvement() -> None:
    stops, callback, _ = _run_ours([1.0, 0.9, 0.95, 0.5], "val_loss")
    assert stops == [False, False, True]
    assert callback.stopped_epoch == 2


def test_restore_best_weights_applies_even_without_an_early_stop() -> None:
    # Keras 3 restores the best weights at the end of training, stopped early or not.
    stops, callback, restored = _run_ours(
        [0.5, 0.4, 0.6], "val_loss", patience=10, restore_best_weights=True
    )
    assert not any(stops)
    assert callback.stopped_epoch == 0
    assert restored == 1


def test_early_stopping_state_round_trips() -> None:
    _, callback, _ = _run_ours(NOISY[:5], "val_loss", patience=9, restore_best_weights=True)
    fresh = KerasEarlyStopping(EarlyStoppingConfig(patience=9, restore_best_weights=True))
    fresh.load_state_dict(callback.state_dict())
    assert (fresh.wait, fresh.best, fresh.best_epoch) == (
        callback.wait,
        callback.best,
        callback.best_epoch,
    )
    assert fresh.best_weights is not None
    assert callback.best_weights is not None
    assert torch.equal(fresh.best_weights["epoch"], callback.best_weights["epoch"])


CHECKPOINT_CASES: list[tuple[list[float], str, dict[str, Any]]] = [
    (NOISY, "val_loss", {"save_best_only": True}),
    (NOISY, "val_loss", {"save_best_only": True, "initial_value_threshold": 0.86}),
    (NOISY, "val_loss", {"save_best_only": False}),
    (DECREASING_THEN_FLAT, "val_loss", {"save_best_only": True, "mode": "max"}),
    (RISING_ACCURACY, "val_accuracy", {"save_best_only": True, "mode": "max"}),
    (
        RISING_ACCURACY,
        "val_accuracy",
        {"save_best_only": True, "mode": "max", "initial_value_threshold": 0.7},
    ),
]


@pytest.mark.parametrize(("values", "monitor", "kwargs"), CHECKPOINT_CASES)
def test_model_checkpoint_saves_when_keras_would(
    values: list[float], monitor: str, kwargs: dict[str, Any], tmp_path: Path
) -> None:
    reference = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "model.keras"), monitor=monitor, **kwargs
    )
    reference._set_monitor_op()
    ours = KerasModelCheckpoint(CheckpointConfig(monitor=monitor, **kwargs), tmp_path)
    for epoch, value in enumerate(values):
        logs = {monitor: value}
        expected = reference._should_save_model(epoch, None, logs, "unused")
        assert ours.should_save(logs) == expected, f"epoch {epoch}"
    assert ours.best == reference.best


def test_model_checkpoint_saves_when_the_monitor_is_missing(tmp_path: Path) -> None:
    ours = KerasModelCheckpoint(CheckpointConfig(save_best_only=True), tmp_path)
    assert ours.should_save({"loss": 0.3})  # Keras saves (and warns) without val_loss


def test_auto_mode_reads_the_direction_from_the_metric_name(tmp_path: Path) -> None:
    by_accuracy = KerasModelCheckpoint(
        CheckpointConfig(monitor="val_accuracy", save_best_only=True), tmp_path
    )
    assert by_accuracy.should_save({"val_accuracy": 0.5})
    assert by_accuracy.should_save({"val_accuracy": 0.6})
    assert not by_accuracy.should_save({"val_accuracy": 0.55})

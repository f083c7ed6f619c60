"""The data loss: Keras's loss without the regularization penalty, per epoch and as objective."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from trainer import TrialConfig, run_trial
from trainer.config import CheckpointConfig, DatasetConfig, ModelConfig
from trainer.data import load_splits
from trainer.lit_module import TrialModule
from trainer.metrics import resolve_mode

DATA = DatasetConfig(name="synthetic", n_samples=300, n_features=8, n_classes=3)
L2 = 0.05


def config(**overrides: Any) -> TrialConfig:
    base: dict[str, Any] = {
        "dataset": DATA,
        "model": ModelConfig(hidden_units=(16,)),
        "max_epochs": 4,
        "checkpoint": CheckpointConfig(resume_every_s=0.0),
    }
    return TrialConfig(**{**base, **overrides})


def regularized(**overrides: Any) -> TrialConfig:
    return config(kernel_regularizer={"class_name": "l2", "config": {"l2": L2}}, **overrides)


def kernels(module: TrialModule) -> list[torch.Tensor]:
    return [m.weight for m in module.network.modules() if isinstance(m, torch.nn.Linear)]


def test_evaluate_splits_the_loss_into_cross_entropy_and_the_l2_penalty() -> None:
    trial = regularized()
    data = load_splits(trial.dataset)
    module = TrialModule(trial.to_dict(), data.input_shape, data.n_classes)
    metrics = module.evaluate(data.val)
    with torch.no_grad():
        cross_entropy = F.cross_entropy(module.network(data.val.X), data.val.y).item()
        penalty = sum(L2 * float((w**2).sum()) for w in kernels(module))
    assert metrics["data_loss"] == pytest.approx(cross_entropy, rel=1e-5)
    assert metrics["loss"] == pytest.approx(cross_entropy + penalty, rel=1e-5)
    assert penalty > 0.1  # large enough that mixing the two up would be seen


def test_without_a_regularizer_the_data_loss_is_the_loss() -> None:
    result = run_trial(config())
    for record in result.history:
        assert record.data_loss == record.loss
        assert record.val_data_loss == pytest.approx(record.val_loss, rel=1e-6)
    assert result.val is not None
    assert result.val.data_loss == pytest.approx(result.val.loss, rel=1e-6)


def test_every_epoch_records_the_data_loss_below_the_penalized_loss() -> None:
    result = run_trial(regularized())
    assert len(result.history) == 4
    for record in result.history:
        assert record.data_loss is not None
        assert record.val_data_loss is not None
        assert math.isfinite(record.data_loss)
        assert math.isfinite(record.val_data_loss)
        assert record.data_loss < record.loss
        assert record.val_data_loss < record.val_loss
    assert result.val is not None
    assert result.val.data_loss is not None
    assert result.val.data_loss < result.val.loss


def test_the_default_objective_is_the_validation_data_loss() -> None:
    trial = regularized()
    assert trial.objective == "val_data_loss"
    assert resolve_mode("val_data_loss", "auto") == "min"
    result = run_trial(trial)
    assert result.val is not None
    assert result.objective == "val_data_loss"
    assert result.objective_value == result.val.data_loss
    assert result.objective_value is not None
    assert result.objective_value < result.val.loss  # not the penalized val_loss


def test_val_loss_stays_selectable_as_the_objective() -> None:
    result = run_trial(regularized(objective="val_loss"))
    assert result.val is not None
    assert result.objective_value == result.val.loss


def test_split_metrics_name_the_data_loss_of_each_split() -> None:
    result = run_trial(regularized(max_epochs=1))
    metrics = result.split_metrics()
    assert result.train is not None
    assert result.val is not None
    assert result.test is not None
    assert metrics["val_data_loss"] == result.val.data_loss
    assert metrics["test_data_loss"] == result.test.data_loss
    assert metrics["train_loss"] == result.train.loss
    assert metrics["val_accuracy"] == result.val.accuracy
    assert metrics["test_error"] == pytest.approx(1 - (result.test.accuracy or 0.0))


def test_regression_records_the_data_loss_too() -> None:
    trial = regularized(
        dataset=DatasetConfig(name="synthetic", n_samples=300, n_features=6, task="regression")
    )
    result = run_trial(trial)
    assert result.task == "regression"
    assert all(r.val_data_loss is not None and r.val_data_loss < r.val_loss for r in result.history)
    assert result.val is not None
    assert result.objective_value == result.val.data_loss

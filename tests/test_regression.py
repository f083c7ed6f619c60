"""Regression tasks: the task read from the data, Keras's losses, MAE metrics, and the error
the fit diagnosis uses (MSE over the train targets' variance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from trainer.config import DatasetConfig, ModelConfig, TrialConfig
from trainer.data import load_splits
from trainer.losses import loss_function, resolve_loss
from trainer.run import run_trial
from trainer.template import TrialTemplate

REGRESSION = DatasetConfig(
    name="synthetic", config={"task": "regression", "n_samples": 400, "n_features": 6}
)


def test_float_targets_are_regression_and_integer_labels_classification(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", X=X, y=X @ [1.0, -2.0, 0.5] + 0.25)
    np.savez(tmp_path / "cls.npz", X=X, y=np.arange(60) % 3)
    reg = load_splits(DatasetConfig(name="npz", config={"path": str(tmp_path / "reg.npz")}))
    cls = load_splits(DatasetConfig(name="npz", config={"path": str(tmp_path / "cls.npz")}))
    assert (reg.task, reg.n_outputs, tuple(reg.train.y.shape[1:])) == ("regression", 1, (1,))
    assert (cls.task, cls.n_outputs) == ("classification", 3)
    forced = load_splits(
        DatasetConfig(name="npz", config={"path": str(tmp_path / "cls.npz")}, task="regression")
    )
    assert forced.task == "regression"


def test_targets_are_standardized_with_train_statistics_only() -> None:
    splits = load_splits(REGRESSION)
    train = splits.train.y.double()
    assert float(train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert splits.target_variance == pytest.approx((1.0,), abs=1e-4)
    assert abs(float(splits.val.y.mean())) > 1e-4  # the validation split is not refitted
    raw = load_splits(REGRESSION.model_copy(update={"standardize_target": False}))
    assert raw.target_variance[0] == pytest.approx(float(raw.train.y.double().var(False)), 1e-4)
    assert raw.fingerprint != splits.fingerprint


@pytest.mark.parametrize(
    ("name", "formula"),
    [
        ("mse", lambda e: (e**2).mean()),
        ("mean_absolute_error", lambda e: e.abs().mean()),
        ("huber", lambda e: torch.where(e.abs() <= 1, 0.5 * e**2, e.abs() - 0.5).mean()),
    ],
)
def test_regression_losses_follow_keras_definitions(name: str, formula: object) -> None:
    prediction = torch.tensor([[0.5], [3.0], [-1.2], [0.0]])
    target = torch.tensor([[0.0], [0.5], [-1.0], [2.5]])
    loss = loss_function(resolve_loss(name, "regression"))(prediction, target)
    assert callable(formula)
    assert float(loss) == pytest.approx(float(formula(prediction - target)))


def test_a_loss_of_the_other_task_is_refused() -> None:
    assert resolve_loss(None, "regression") == "mean_squared_error"
    assert resolve_loss(None, "classification") == "sparse_categorical_crossentropy"
    with pytest.raises(ValueError, match="is for regression, but the dataset is a classification"):
        resolve_loss("huber", "classification")


def test_a_regression_trial_reports_mae_and_a_variance_relative_error() -> None:
    config = TrialConfig(
        dataset=REGRESSION,
        model=ModelConfig(hidden_units=(32,)),
        optimizer={"class_name": "adam", "config": {"learning_rate": 0.01}},
        max_epochs=15,
        objective="val_mae",
    )
    result = run_trial(config)
    assert (result.status, result.task) == ("completed", "regression")
    assert result.val is not None
    assert result.train is not None
    assert result.test is not None
    assert all(r.accuracy is None and r.mae is not None for r in result.history)
    first, last = result.history[0].val_mae, result.history[-1].val_mae
    assert first is not None
    assert last is not None
    assert last < first  # it learns
    assert result.objective_value == result.val.mae
    # train targets are z-scored: MSE is then the fraction of variance left unexplained
    assert result.train.accuracy is None
    assert 0.0 <= result.train.error < 0.5
    assert result.diagnosis is not None
    assert "unexplained variance" in result.diagnosis.explanation


def test_predicting_the_train_mean_has_error_one() -> None:
    """A model that outputs zeros predicts the (standardized) train mean: its train error,
    MSE / Var(y_train), is exactly 1, as 1 - R² is."""
    config = TrialConfig(
        dataset=REGRESSION,
        model=ModelConfig(hidden_units=()),
        kernel_initializer="zeros",
        optimizer={"class_name": "sgd", "config": {"learning_rate": 1e-12}},
        max_epochs=1,
    )
    result = run_trial(config)
    assert result.train is not None
    assert result.train.error == pytest.approx(1.0, abs=1e-4)
    assert result.train.loss == pytest.approx(1.0, abs=1e-4)  # mse of standardized targets


def test_classification_metrics_are_refused_for_a_known_regression_dataset() -> None:
    with pytest.raises(ValidationError, match="'val_accuracy' is not a metric of a regression"):
        TrialTemplate(dataset=REGRESSION, objective="val_accuracy")
    with pytest.raises(ValidationError, match="loss 'sparse_categorical_crossentropy' is for"):
        TrialTemplate(dataset=REGRESSION, loss="sparse_categorical_crossentropy")
    assert TrialTemplate(dataset=REGRESSION, objective="val_mae").objective == "val_mae"


def test_a_regression_objective_on_data_found_to_be_classification_fails_clearly(
    tmp_path: Path,
) -> None:
    np.savez(tmp_path / "cls.npz", X=np.eye(40, 4), y=np.arange(40) % 2)
    dataset = DatasetConfig(name="npz", config={"path": str(tmp_path / "cls.npz")})
    with pytest.raises(ValueError, match="'val_mae' is not a metric of a classification task"):
        run_trial(TrialConfig(dataset=dataset, objective="val_mae", max_epochs=1))

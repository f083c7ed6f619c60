"""The DataLoader path: a loader returning per-split torch Datasets, and arrays streamed on
request. Streamed data must train to the same weights as its in-memory twin for one seed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.utils.data import Dataset, TensorDataset

from tests.test_plugins import examples  # noqa: F401  # the example-package fixture
from trainer import datasets
from trainer.config import DatasetConfig, ModelConfig, TrialConfig
from trainer.data import DatasetError, Split, StreamedSplit, load_data, load_splits
from trainer.run import TrialResult, run_trial

TWIN = "test_split_datasets"


def twin_arrays(task: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, n in (("train", 150), ("val", 50), ("test", 40)):
        X = rng.normal(size=(n, 6)).astype(np.float32)
        if task == "classification":
            y: np.ndarray = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
        else:
            y = (X @ np.arange(6, dtype=np.float32)).astype(np.float32)
        parts[name] = (X, y)
    return parts


class Items(Dataset[tuple[np.ndarray, Any]]):
    """Items as a plugin's Dataset would give them: numpy rows and Python scalars."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        return self.X[index], self.y[index].item()


def load_twin(task: str = "classification", broken: str = "") -> dict[str, Any]:
    parts = {name: Items(X, y) for name, (X, y) in twin_arrays(task).items()}
    if broken == "no_val":
        del parts["val"]
    if broken == "not_a_pair":
        parts["train"] = TensorDataset(torch.zeros(4, 6))  # type: ignore[assignment]
    return parts


@pytest.fixture
def twin() -> Iterator[None]:
    load_twin.task = None  # type: ignore[attr-defined]  # read from the items' y
    datasets.registry.register(TWIN)(load_twin)
    yield
    datasets.registry.unregister(TWIN)


def trial(dataset: dict[str, Any], **overrides: Any) -> TrialConfig:
    values: dict[str, Any] = {
        "dataset": DatasetConfig(**dataset),
        "model": ModelConfig(hidden_units=(16,), dropout=0.3),  # dropout: the global RNG
        "optimizer": {"class_name": "adam", "config": {"learning_rate": 0.01}},
        "batch_size": 32,
        "max_epochs": 3,
        "seed": 5,
        **overrides,
    }
    return TrialConfig(**values)


def same_training(a: TrialResult, b: TrialResult) -> None:
    assert a.status == b.status == "completed"
    assert len(a.history) == len(b.history) == 3
    for mine, theirs in zip(a.history, b.history, strict=True):
        assert mine.loss == pytest.approx(theirs.loss, rel=1e-6)
        assert mine.val_loss == pytest.approx(theirs.val_loss, rel=1e-6)
    for split in ("train", "val", "test"):
        mine, theirs = getattr(a, split), getattr(b, split)
        assert mine.loss == pytest.approx(theirs.loss, rel=1e-6)
        assert mine.error == pytest.approx(theirs.error, rel=1e-5)


def test_streamed_arrays_train_exactly_as_in_memory() -> None:
    base = {"name": "synthetic", "config": {"n_samples": 300, "n_features": 8}}
    streamed = {**base, "data_loader": {"in_memory": False}}
    data = load_data(DatasetConfig(**streamed))
    assert data.streamed
    assert isinstance(data.train, StreamedSplit)
    assert len(data.train) == len(load_splits(DatasetConfig(**base)).train)
    memory = run_trial(trial(base))
    stream = run_trial(trial(streamed))
    same_training(memory, stream)
    assert memory.data_fingerprint == stream.data_fingerprint  # the same data, split alike
    assert [r.accuracy for r in memory.history] == [r.accuracy for r in stream.history]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_loaders_datasets_train_as_their_in_memory_twin(twin: None, task: str) -> None:
    streamed = {"name": TWIN, "config": {"task": task}, "standardize": False}
    in_memory = {**streamed, "data_loader": {"in_memory": True}}
    data = load_data(DatasetConfig(**streamed))
    assert isinstance(data.train, StreamedSplit)
    assert data.task == task
    assert data.n_outputs == (3 if task == "classification" else 1)
    memory = load_data(DatasetConfig(**in_memory))
    assert isinstance(memory.train, Split)
    X, y = twin_arrays(task)["train"]
    torch.testing.assert_close(memory.train.X, torch.from_numpy(X))  # read as the items are
    if task == "regression":
        assert memory.train.y.shape == (150, 1)
        assert memory.target_variance == pytest.approx((float(np.var(y)),), rel=1e-5)
    objective = "val_loss"
    same_training(
        run_trial(trial(streamed, objective=objective)),
        run_trial(trial(in_memory, objective=objective)),
    )


def test_regression_error_of_streamed_data_is_relative_to_the_train_variance(twin: None) -> None:
    """Streamed splits are not read in advance: the final evaluation measures Var(y_train)."""
    streamed = {"name": TWIN, "config": {"task": "regression"}}
    config = trial(streamed, model=ModelConfig(hidden_units=()), kernel_initializer="zeros")
    config = TrialConfig.from_dict(
        {
            **config.to_dict(),
            "optimizer": {"class_name": "sgd", "config": {"learning_rate": 1e-12}},
            "max_epochs": 1,
        }
    )
    result = run_trial(config)
    _, y_train = twin_arrays("regression")["train"]
    assert result.train is not None
    # a zero predictor's MSE is E[y²]; over Var(y) that is 1 + mean² / variance
    expected = float(np.mean(y_train**2) / np.var(y_train))
    assert result.train.error == pytest.approx(expected, rel=1e-4)


def test_worker_processes_give_the_same_batches(twin: None) -> None:
    streamed = {"name": TWIN, "config": {}}
    with_workers = {**streamed, "data_loader": {"num_workers": 2}}
    same_training(run_trial(trial(streamed)), run_trial(trial(with_workers)))


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"broken": "no_val"}, "needs keys 'train' and 'val'.*missing \\['val'\\]"),
        ({"broken": "not_a_pair"}, "each Dataset item must be a pair \\(x, y\\)"),
    ],
)
def test_bad_datasets_get_a_clear_error(twin: None, config: dict[str, Any], problem: str) -> None:
    with pytest.raises(DatasetError, match=problem):
        load_data(DatasetConfig(name=TWIN, config=config))


def test_an_image_model_refuses_flat_items(twin: None) -> None:
    config = trial({"name": TWIN}, model=ModelConfig(type="cnn", channels=(4,)))
    with pytest.raises(DatasetError, match=r"needs image inputs.*shape \(6,\)"):
        run_trial(config)


def test_folds_need_arrays(twin: None) -> None:
    with pytest.raises(DatasetError, match="k-fold cross-validation needs a loader that returns"):
        run_trial(trial({"name": TWIN, "folds": 2}))
    with pytest.raises(ValidationError, match="k-fold cross-validation trains in memory"):
        DatasetConfig(folds=2, data_loader={"in_memory": False})


def test_the_example_streamed_dataset_trains_a_plugin_model(examples: None) -> None:  # noqa: F811
    config = trial(
        {"name": "diabetes_streamed", "config": {"seed": 1}},
        model=ModelConfig(type="resmlp", config={"width": 16, "blocks": 1}),
        objective="val_mae",
    )
    result = run_trial(config)
    assert result.status == "completed"
    assert result.task == "regression"
    assert result.val is not None
    assert result.val.mae is not None
    assert 0 < result.val.error < 2  # standardized targets: a fitted model explains some variance
    assert set(result.plugin_versions) == {"hpsearch-examples"}

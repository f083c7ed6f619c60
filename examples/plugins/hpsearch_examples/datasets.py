"""scikit-learn's bundled diabetes data: the dataset plugin contract, `load(**config)`.

`load_diabetes` returns arrays (data that fits in memory); `load_diabetes_splits` returns a
`torch.utils.data.Dataset` per split (the DataLoader path, for data that does not)."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset


class DiabetesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_samples: int | None = Field(
        default=None, ge=20, le=442, description="the first n of the 442 patients (default all)"
    )


def load_diabetes(n_samples: int | None = None) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Diabetes progression one year after baseline, from 10 measurements (442 patients).

    Ships inside scikit-learn: nothing is downloaded. The float targets make it a regression
    task (declared below as well); hpsearch splits and standardizes it."""
    from sklearn.datasets import load_diabetes as sklearn_diabetes

    X, y = sklearn_diabetes(return_X_y=True)
    if n_samples is not None:
        X, y = X[:n_samples], y[:n_samples]
    return X.astype(np.float32), y.astype(np.float32)


load_diabetes.config_schema = DiabetesConfig  # type: ignore[attr-defined]
load_diabetes.task = "regression"  # type: ignore[attr-defined]


class DiabetesSplitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    validation_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.2, ge=0.0, lt=0.5)
    seed: int = 0


class Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One row per item, read on demand. A real plugin's Dataset would read a file per item
    (images, shards) here: only the rows of the current batch are ever in memory."""

    def __init__(self, X: NDArray[np.float32], y: NDArray[np.float32]) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.X[index]), torch.tensor(self.y[index])


def load_diabetes_splits(
    validation_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, Dataset[tuple[torch.Tensor, torch.Tensor]]]:
    """The same data as per-split `torch.utils.data.Dataset`s: the DataLoader path, for data
    that does not fit in memory. The plugin splits and standardizes it itself (features and
    target with the train split's statistics), since hpsearch does not read a streamed
    dataset in advance."""
    X, y = load_diabetes()
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = round(validation_fraction * len(y))
    n_test = round(test_fraction * len(y))
    parts = {
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
        "train": order[n_val + n_test :],
    }
    train = parts["train"]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    y_mean, y_std = y[train].mean(), y[train].std()
    X = ((X - mean) / std).astype(np.float32)
    y = ((y - y_mean) / y_std).astype(np.float32)
    return {name: Rows(X[rows], y[rows]) for name, rows in parts.items() if len(rows)}


load_diabetes_splits.config_schema = DiabetesSplitsConfig  # type: ignore[attr-defined]
load_diabetes_splits.task = "regression"  # type: ignore[attr-defined]

"""Datasets as device-resident tensors: digits, seeded synthetic data, and user CSV/NPZ files.

Small tabular and image data fit in memory, so each split is one pair of tensors moved to the
training device once; mini-batches are index slices, with no DataLoader in the way. Splits are
stratified by class where every class has enough samples, and standardization is fitted on the
training split only, so no statistic leaks from validation or test data.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.datasets import load_digits, make_classification
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from trainer.config import DatasetConfig

FloatArray = NDArray[np.float32]
LabelArray = NDArray[np.int64]


class DatasetError(ValueError):
    """User data that cannot be trained on; the message says what is wrong and where."""


@dataclass(frozen=True)
class Split:
    X: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.X.to(device), self.y.to(device))


@dataclass(frozen=True)
class DataSplits:
    train: Split
    val: Split
    test: Split | None
    input_shape: tuple[int, ...]
    n_classes: int
    fingerprint: str
    """sha256 of the raw data and the split settings: equal fingerprints, equal splits."""

    def to(self, device: torch.device) -> DataSplits:
        return DataSplits(
            self.train.to(device),
            self.val.to(device),
            None if self.test is None else self.test.to(device),
            self.input_shape,
            self.n_classes,
            self.fingerprint,
        )


@dataclass(frozen=True)
class _Arrays:
    X: FloatArray  # (n, features) or (n, channels, height, width)
    y: LabelArray  # class indices 0..n_classes-1
    n_classes: int


def load_splits(config: DatasetConfig, *, image: bool = False) -> DataSplits:
    """Load the data set and split it into train/validation/test by the config's fractions.

    The result is cached per process (a worker runs many trials on one data set); a user file
    is read again when its size or modification time changes. Treat the tensors as read-only.
    """
    return _cached_splits(config, image, _file_stamp(config.path))


def _file_stamp(path: str | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        stat = Path(path).stat()
    except OSError:
        return None  # _load reports the missing file with its own message
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _cached_splits(config: DatasetConfig, image: bool, stamp: tuple[int, int] | None) -> DataSplits:
    arrays = _load(config, image=image)
    rest, test = _split_off(arrays.y, config.test_split, config.seed)
    # validation_split is a fraction of all samples, like test_split.
    train_pos, val_pos = _split_off(
        arrays.y[rest], config.validation_split, config.seed + 1, of=len(arrays.y)
    )
    return _make_splits(arrays, rest[train_pos], rest[val_pos], test, config)


def load_folds(config: DatasetConfig, *, image: bool = False) -> Iterator[DataSplits]:
    """k-fold cross-validation: the test split is held out, train+validation are rotated."""
    if config.folds is None:
        raise ValueError("load_folds needs a DatasetConfig with 'folds' set")
    arrays = _load(config, image=image)
    rest, test = _split_off(arrays.y, config.test_split, config.seed)
    counts = np.bincount(arrays.y[rest], minlength=arrays.n_classes)
    if counts.min() < config.folds:
        raise DatasetError(
            f"{config.folds}-fold cross-validation needs at least {config.folds} samples of every "
            f"class outside the test split; the rarest class has {counts.min()}"
        )
    folds = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    for train_pos, val_pos in folds.split(np.zeros(len(rest)), arrays.y[rest]):
        yield _make_splits(arrays, rest[train_pos], rest[val_pos], test, config)


def _make_splits(
    arrays: _Arrays,
    train: NDArray[np.int64],
    val: NDArray[np.int64],
    test: NDArray[np.int64],
    config: DatasetConfig,
) -> DataSplits:
    X = arrays.X
    if config.standardize:
        flat = X.reshape(len(X), -1)
        scaler = StandardScaler().fit(flat[train])
        X = scaler.transform(flat).astype(np.float32).reshape(X.shape)

    def split(positions: NDArray[np.int64]) -> Split:
        return Split(torch.from_numpy(X[positions].copy()), torch.from_numpy(arrays.y[positions]))

    digest = hashlib.sha256(arrays.X.tobytes())
    digest.update(arrays.y.tobytes())
    for positions in (train, val, test):
        digest.update(np.sort(positions).tobytes())
    digest.update(repr(config.standardize).encode())
    return DataSplits(
        train=split(train),
        val=split(val),
        test=split(test) if len(test) else None,
        input_shape=tuple(X.shape[1:]),
        n_classes=arrays.n_classes,
        fingerprint=digest.hexdigest(),
    )


def _split_off(
    y: LabelArray, fraction: float, seed: int, *, of: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Positions kept and positions split off: ceil(fraction * of) of them (`of`: len(y) unless
    given), stratified when every class allows it (both parts able to hold every class)."""
    positions = np.arange(len(y), dtype=np.int64)
    total = len(y) if of is None else of
    n_off = math.ceil(fraction * total)
    if n_off == 0:
        return positions, np.empty(0, dtype=np.int64)
    if n_off >= len(y):
        raise DatasetError(f"{total} samples are too few to split off {fraction:.0%}")
    counts = np.bincount(y)
    stratify = (
        y if counts[counts > 0].min() >= 2 and min(n_off, len(y) - n_off) >= len(counts) else None
    )
    kept, off = train_test_split(positions, test_size=n_off, random_state=seed, stratify=stratify)
    return np.asarray(kept, dtype=np.int64), np.asarray(off, dtype=np.int64)


def _load(config: DatasetConfig, *, image: bool) -> _Arrays:
    if config.name == "digits":
        digits = load_digits()
        X = digits.data.astype(np.float32)
        arrays = _Arrays(X.reshape(-1, 1, 8, 8) if image else X, digits.target.astype(np.int64), 10)
    elif config.name == "synthetic":
        arrays = _synthetic(config)
    elif config.name == "csv":
        arrays = _read_csv(Path(str(config.path)), str(config.target))
    else:
        arrays = _read_npz(Path(str(config.path)))
    return _check_shape(arrays, image=image, source=config.path or config.name)


def _synthetic(config: DatasetConfig) -> _Arrays:
    needed = math.ceil(math.log2(config.n_classes))
    if needed > config.n_features:
        raise DatasetError(
            f"synthetic data with {config.n_classes} classes needs at least {needed} features"
        )
    X, y = make_classification(
        n_samples=config.n_samples,
        n_features=config.n_features,
        n_informative=max(needed, min(config.n_features, max(2, config.n_features // 2))),
        n_redundant=0,
        n_classes=config.n_classes,
        n_clusters_per_class=1,
        random_state=config.seed,
    )
    return _Arrays(X.astype(np.float32), y.astype(np.int64), config.n_classes)


def _read_csv(path: Path, target: str) -> _Arrays:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read CSV file {path.name}: {error}") from None
    if not header:
        raise DatasetError(f"CSV file {path.name} is empty")
    header = [name.strip() for name in header]
    if target not in header:
        raise DatasetError(
            f"CSV file {path.name} has no target column {target!r}; columns: {header}"
        )
    target_index = header.index(target)
    features: list[list[float]] = []
    labels: list[str] = []
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DatasetError(f"CSV line {line}: {len(row)} fields, the header has {len(header)}")
        values: list[float] = []
        for column, cell in zip(header, row, strict=True):
            if column == target:
                continue
            try:
                values.append(float(cell))
            except ValueError:
                raise DatasetError(
                    f"CSV line {line}, column {column!r}: {cell!r} is not a number"
                ) from None
        features.append(values)
        labels.append(row[target_index].strip())
    if len(header) < 2:
        raise DatasetError(f"CSV file {path.name} has no feature column besides {target!r}")
    return _encode(np.asarray(features, dtype=np.float32), np.asarray(labels), path.name)


def _read_npz(path: Path) -> _Arrays:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"X", "y"} - set(archive.files)
            if missing:
                raise DatasetError(f"NPZ file {path.name} lacks arrays {sorted(missing)}")
            X, y = archive["X"], archive["y"]
    except (OSError, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"cannot read NPZ file {path.name}: {error}") from None
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise DatasetError(f"NPZ file {path.name}: X must be numeric, got dtype {X.dtype}")
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim not in (2, 4):
        raise DatasetError(
            f"NPZ file {path.name}: X must be (n, features), (n, h, w) or (n, c, h, w)"
        )
    if y.ndim != 1 or len(y) != len(X):
        raise DatasetError(f"NPZ file {path.name}: y must be 1-D with one label per row of X")
    return _encode(X.astype(np.float32), y, path.name)


def _encode(X: FloatArray, labels: NDArray[np.generic], source: str) -> _Arrays:
    if len(X) == 0:
        raise DatasetError(f"{source} has no rows")
    if not np.isfinite(X).all():
        row = int(np.argwhere(~np.isfinite(X.reshape(len(X), -1)))[0][0])
        raise DatasetError(f"{source}: row {row} has a missing or non-finite value")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DatasetError(f"{source}: the target has {len(classes)} class; at least 2 are needed")
    return _Arrays(X, y.astype(np.int64).reshape(-1), len(classes))


def _check_shape(arrays: _Arrays, *, image: bool, source: str) -> _Arrays:
    if image and arrays.X.ndim != 4:
        raise DatasetError(
            f"a CNN needs image inputs; {source} is flat (use digits, or an NPZ whose X is "
            "(n, h, w) or (n, c, h, w))"
        )
    if not image and arrays.X.ndim != 2:
        return _Arrays(arrays.X.reshape(len(arrays.X), -1), arrays.y, arrays.n_classes)
    return arrays

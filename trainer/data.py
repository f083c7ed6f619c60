"""Datasets as device-resident tensors, from any registered loader (`trainer.datasets`).

Small tabular and image data fit in memory, so each split is one pair of tensors moved to the
training device once; mini-batches are index slices, with no DataLoader in the way. A loader
that returns per-split `torch.utils.data.Dataset`s instead is streamed through a DataLoader
(`trainer.streaming`), unless `data_loader.in_memory` reads it into tensors once. Splits are
stratified by class where every class has enough samples, and standardization (of features;
of regression targets too, unless turned off) is fitted on the training split only, so no
statistic leaks from validation or test data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler
from torch.utils.data import TensorDataset

from trainer import datasets, streaming
from trainer.config import DatasetConfig
from trainer.contracts import Task
from trainer.datasets import DatasetError
from trainer.streaming import LoaderSettings, StreamedSplit

FloatArray = NDArray[np.float32]
LabelArray = NDArray[np.int64]

__all__ = ["DataSplits", "DatasetError", "Split", "StreamedSplit", "load_folds", "load_splits"]


@dataclass(frozen=True)
class Split:
    X: torch.Tensor
    y: torch.Tensor
    """Class indices (classification) or float targets shaped (n, k) (regression)."""

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.X.to(device), self.y.to(device))


S = TypeVar("S", Split, StreamedSplit)


@dataclass(frozen=True)
class DataSplits(Generic[S]):
    """Train/validation/test splits of one kind: tensors (`Split`) or streamed."""

    train: S
    val: S
    test: S | None
    input_shape: tuple[int, ...]
    n_outputs: int
    """Classes (classification) or target columns (regression): the model's output width."""
    fingerprint: str
    """sha256 of the raw data and the split settings: equal fingerprints, equal splits."""
    task: Task = "classification"
    target_variance: tuple[float, ...] = ()
    """Regression: each target column's variance on the train split (the error's scale);
    empty for streamed splits (measured by the final evaluation instead)."""

    @property
    def n_classes(self) -> int:
        return self.n_outputs

    @property
    def streamed(self) -> bool:
        return isinstance(self.train, StreamedSplit)

    def to(self, device: torch.device) -> DataSplits[S]:
        return DataSplits(
            self.train.to(device),
            self.val.to(device),
            None if self.test is None else self.test.to(device),
            self.input_shape,
            self.n_outputs,
            self.fingerprint,
            self.task,
            self.target_variance,
        )


@dataclass(frozen=True)
class _Arrays:
    X: FloatArray  # (n, features) or (n, channels, height, width)
    y: NDArray[Any]  # class indices 0..n_outputs-1, or float targets (n, n_outputs)
    n_outputs: int
    task: Task = "classification"

    def strata(self) -> NDArray[np.int64] | None:
        """What splits are stratified by: the classes (regression: nothing)."""
        return self.y if self.task == "classification" else None


AnySplits = DataSplits[Split] | DataSplits[StreamedSplit]


def load_data(
    config: DatasetConfig, *, image: bool | None = False, cached: bool = True
) -> AnySplits:
    """Load the data set and split it into train/validation/test by the config's fractions:
    in memory, or streamed as `config.data_loader.in_memory` says (see the module docstring).

    image: True for (channels, height, width) inputs, False to flatten them, None as loaded.
    The result is cached per process (a worker runs many trials on one data set; `cached=False`
    for a one-off read, such as an upload's check in the API process); a user file is read
    again when its size or modification time changes. Treat the tensors as read-only.
    """
    load = _cached_splits if cached else _cached_splits.__wrapped__  # cached=False: a one-off
    return load(config.model_dump_json(), image, _file_stamp(config.path))


def load_splits(
    config: DatasetConfig, *, image: bool | None = False, cached: bool = True
) -> DataSplits[Split]:
    """`load_data` in memory whatever `data_loader.in_memory` says (a loader's Datasets are
    read into tensors once)."""
    in_memory = config.model_copy(
        update={"data_loader": config.data_loader.model_copy(update={"in_memory": True})}
    )
    return cast(DataSplits[Split], load_data(in_memory, image=image, cached=cached))


def _file_stamp(path: str | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        stat = Path(path).stat()
    except OSError:
        return None  # _load reports the missing file with its own message
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _cached_splits(key: str, image: bool | None, stamp: tuple[int, int] | None) -> AnySplits:
    config = DatasetConfig.model_validate_json(key)
    loaded = _call_loader(config)
    if isinstance(loaded, Mapping):
        return _from_datasets(loaded, config, image=image)
    arrays = _arrays(loaded, config, image=image)
    rest, test = _split_off(arrays.strata(), len(arrays.y), config.test_split, config.seed)
    # validation_split is a fraction of all samples, like test_split.
    strata = arrays.strata()
    train_pos, val_pos = _split_off(
        None if strata is None else strata[rest],
        len(rest),
        config.validation_split,
        config.seed + 1,
        of=len(arrays.y),
    )
    return _as_configured(
        _make_splits(arrays, rest[train_pos], rest[val_pos], test, config), config
    )


def load_folds(config: DatasetConfig, *, image: bool | None = False) -> Iterator[DataSplits[Split]]:
    """k-fold cross-validation: the test split is held out, train+validation are rotated.
    Folds are always in memory (the config refuses `data_loader.in_memory: false` with folds)."""
    if config.folds is None:
        raise ValueError("load_folds needs a DatasetConfig with 'folds' set")
    loaded = _call_loader(config)
    if isinstance(loaded, Mapping):
        raise DatasetError(
            f"dataset {config.name!r} returns a Dataset per split; k-fold cross-validation "
            "needs a loader that returns arrays (X, y)"
        )
    arrays = _arrays(loaded, config, image=image)
    strata = arrays.strata()
    rest, test = _split_off(strata, len(arrays.y), config.test_split, config.seed)
    if strata is None:
        if len(rest) < config.folds:
            raise DatasetError(
                f"{config.folds}-fold cross-validation needs at least {config.folds} samples "
                f"outside the test split; there are {len(rest)}"
            )
        splitter: Any = KFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    else:
        counts = np.bincount(strata[rest], minlength=arrays.n_outputs)
        if counts.min() < config.folds:
            raise DatasetError(
                f"{config.folds}-fold cross-validation needs at least {config.folds} samples of "
                f"every class outside the test split; the rarest class has {counts.min()}"
            )
        splitter = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    labels = np.zeros(len(rest)) if strata is None else strata[rest]
    for train_pos, val_pos in splitter.split(np.zeros(len(rest)), labels):
        yield _make_splits(arrays, rest[train_pos], rest[val_pos], test, config)


def _settings(config: DatasetConfig) -> LoaderSettings:
    loader = config.data_loader
    return LoaderSettings(loader.num_workers, loader.pin_memory, loader.eval_batch_size)


def _as_configured(splits: DataSplits[Split], config: DatasetConfig) -> AnySplits:
    """In-memory splits as they are, or streamed from the same tensors (`in_memory: false`:
    the DataLoader path on data that fits, to compare the two)."""
    if config.data_loader.in_memory is not False:
        return splits
    settings = _settings(config)

    def stream(split: Split) -> StreamedSplit:
        dataset = TensorDataset(split.X, split.y)
        return StreamedSplit(dataset, len(split), False, splits.task, settings)

    return DataSplits(
        train=stream(splits.train),
        val=stream(splits.val),
        test=None if splits.test is None else stream(splits.test),
        input_shape=splits.input_shape,
        n_outputs=splits.n_outputs,
        fingerprint=splits.fingerprint,  # the same data, split the same way
        task=splits.task,
        target_variance=splits.target_variance,
    )


def _from_datasets(
    loaded: Mapping[str, Any], config: DatasetConfig, *, image: bool | None
) -> AnySplits:
    """A loader's per-split Datasets: streamed, or read into tensors with `in_memory: true`."""
    if config.folds is not None:
        raise DatasetError(
            f"dataset {config.name!r} returns a Dataset per split; k-fold cross-validation "
            "needs a loader that returns arrays (X, y)"
        )
    split_map, input_shape, n_outputs, task = streaming.streamed_splits(
        loaded,
        source=f"dataset {config.name!r}",
        image=image,
        task=config.declared_task(),
        settings=_settings(config),
    )
    if not config.data_loader.in_memory:
        return DataSplits(
            train=split_map["train"],
            val=split_map["val"],
            test=split_map.get("test"),
            input_shape=input_shape,
            n_outputs=n_outputs,
            fingerprint=streaming.fingerprint(config.name, json.dumps(config.config), split_map),
            task=task,
        )
    tensors = {name: Split(*streaming.materialize(split)) for name, split in split_map.items()}
    digest = hashlib.sha256(f"datasets {config.name}".encode())
    for name, split in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(split.X.numpy().tobytes())
        digest.update(split.y.numpy().tobytes())
    train_y = tensors["train"].y
    variance = (
        tuple(float(v) for v in train_y.double().var(dim=0, unbiased=False))
        if task == "regression"
        else ()
    )
    return DataSplits(
        train=tensors["train"],
        val=tensors["val"],
        test=tensors.get("test"),
        input_shape=input_shape,
        n_outputs=n_outputs,
        fingerprint=digest.hexdigest(),
        task=task,
        target_variance=variance,
    )


def _make_splits(
    arrays: _Arrays,
    train: NDArray[np.int64],
    val: NDArray[np.int64],
    test: NDArray[np.int64],
    config: DatasetConfig,
) -> DataSplits[Split]:
    X, y = arrays.X, arrays.y
    if config.standardize:
        flat = X.reshape(len(X), -1)
        scaler = StandardScaler().fit(flat[train])
        X = scaler.transform(flat).astype(np.float32).reshape(X.shape)
    variance: tuple[float, ...] = ()
    if arrays.task == "regression":
        if config.standardize_target:
            y = StandardScaler().fit(y[train]).transform(y).astype(np.float32)
        variance = tuple(float(v) for v in np.var(y[train], axis=0))

    def split(positions: NDArray[np.int64]) -> Split:
        return Split(torch.from_numpy(X[positions].copy()), torch.from_numpy(y[positions].copy()))

    digest = hashlib.sha256(arrays.X.tobytes())
    digest.update(arrays.y.tobytes())
    for positions in (train, val, test):
        digest.update(np.sort(positions).tobytes())
    digest.update(repr(config.standardize).encode())
    if arrays.task == "regression":
        digest.update(f"regression standardize_target={config.standardize_target}".encode())
    return DataSplits(
        train=split(train),
        val=split(val),
        test=split(test) if len(test) else None,
        input_shape=tuple(X.shape[1:]),
        n_outputs=arrays.n_outputs,
        fingerprint=digest.hexdigest(),
        task=arrays.task,
        target_variance=variance,
    )


def _split_off(
    y: LabelArray | None, n: int, fraction: float, seed: int, *, of: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Positions kept and positions split off of `n`: ceil(fraction * of) of them (`of`: n
    unless given), stratified by the classes `y` when every class allows it (both parts able
    to hold every class); `y` None: not stratified (regression)."""
    positions = np.arange(n, dtype=np.int64)
    total = n if of is None else of
    n_off = math.ceil(fraction * total)
    if n_off == 0:
        return positions, np.empty(0, dtype=np.int64)
    if n_off >= n:
        raise DatasetError(f"{total} samples are too few to split off {fraction:.0%}")
    stratify = None
    if y is not None:
        counts = np.bincount(y)
        if counts[counts > 0].min() >= 2 and min(n_off, n - n_off) >= len(counts):
            stratify = y
    kept, off = train_test_split(positions, test_size=n_off, random_state=seed, stratify=stratify)
    return np.asarray(kept, dtype=np.int64), np.asarray(off, dtype=np.int64)


def _arrays(
    loaded: tuple[NDArray[Any], NDArray[Any]], config: DatasetConfig, *, image: bool | None
) -> _Arrays:
    X, y = loaded
    source = config.path or config.name
    X = _features(X, source)
    task = config.declared_task() or _inferred_task(y)
    arrays = _encode(X, y, source) if task == "classification" else _targets(X, y, source)
    return _check_shape(arrays, image=image, source=source)


def _call_loader(
    config: DatasetConfig,
) -> tuple[NDArray[Any], NDArray[Any]] | Mapping[str, Any]:
    """What the loader returns: arrays (X, y), or a mapping of Datasets per split."""
    try:
        loaded = datasets.loader(config.name)(**config.config)
    except DatasetError:
        raise
    except Exception as error:
        raise DatasetError(
            f"dataset {config.name!r} failed to load: {type(error).__name__}: {error}"
        ) from error
    if isinstance(loaded, Mapping):
        return loaded
    if not (isinstance(loaded, tuple) and len(loaded) == 2):
        raise DatasetError(
            f"dataset {config.name!r}: load() must return a pair of arrays (X, y) or a "
            f"mapping of torch Datasets per split, got {type(loaded).__name__}"
        )
    return np.asarray(loaded[0]), np.asarray(loaded[1])


def _inferred_task(y: NDArray[np.generic]) -> Task:
    """Integer, boolean or string labels: classification; float targets: regression."""
    return "regression" if np.issubdtype(y.dtype, np.floating) else "classification"


def _features(X: NDArray[np.generic], source: str) -> FloatArray:
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise DatasetError(f"{source}: X must be numeric, got dtype {X.dtype}")
    if X.ndim >= 1 and len(X) == 0:
        raise DatasetError(f"{source} has no rows")
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim not in (2, 4):
        raise DatasetError(f"{source}: X must be (n, features), (n, h, w) or (n, c, h, w)")
    return X.astype(np.float32)


def _check_rows(X: FloatArray, y: NDArray[np.generic], source: str) -> None:
    if len(X) == 0:
        raise DatasetError(f"{source} has no rows")
    if len(y) != len(X) or y.ndim not in (1, 2):
        raise DatasetError(
            f"{source}: y must be (n,) or (n, k) with one row per row of X; "
            f"X has {len(X)} rows, y has shape {y.shape}"
        )
    if not np.isfinite(X).all():
        row = int(np.argwhere(~np.isfinite(X.reshape(len(X), -1)))[0][0])
        raise DatasetError(f"{source}: row {row} has a missing or non-finite value")


def _encode(X: FloatArray, labels: NDArray[np.generic], source: str) -> _Arrays:
    _check_rows(X, labels, source)
    if labels.ndim != 1:
        raise DatasetError(f"{source}: class labels must be 1-D, got shape {labels.shape}")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DatasetError(f"{source}: the target has {len(classes)} class; at least 2 are needed")
    return _Arrays(X, y.astype(np.int64).reshape(-1), len(classes))


def _targets(X: FloatArray, y: NDArray[np.generic], source: str) -> _Arrays:
    _check_rows(X, y, source)
    try:
        targets = y.astype(np.float32)
    except ValueError:
        raise DatasetError(f"{source}: regression targets must be numbers") from None
    if not np.isfinite(targets).all():
        row = int(np.argwhere(~np.isfinite(targets.reshape(len(targets), -1)))[0][0])
        raise DatasetError(f"{source}: target of row {row} is missing or non-finite")
    targets = targets.reshape(len(targets), -1)
    return _Arrays(X, targets, targets.shape[1], task="regression")


def _check_shape(arrays: _Arrays, *, image: bool | None, source: str) -> _Arrays:
    """image True: (n, c, h, w) required; False: flattened to (n, features); None: as is."""
    if image and arrays.X.ndim != 4:
        raise DatasetError(
            f"this model needs image inputs; {source} is flat (use digits, or an NPZ whose X is "
            "(n, h, w) or (n, c, h, w))"
        )
    if image is False and arrays.X.ndim != 2:
        flat = arrays.X.reshape(len(arrays.X), -1)
        return _Arrays(flat, arrays.y, arrays.n_outputs, arrays.task)
    return arrays

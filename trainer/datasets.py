"""The dataset registry: name → `DatasetLoader`, with the built-in loaders registered.

`digits` (scikit-learn's bundled 8×8 digits, as images), `synthetic` (seeded, classification or
regression), `csv` and `npz` (files, used for uploads). Plugins join from the `hpsearch.datasets`
entry-point group (`trainer.plugins`). Each loader returns raw `(X, y)` arrays; `trainer.data`
encodes labels, splits and standardizes them the same way for every loader.
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from trainer._registry import Registry
from trainer.contracts import TASKS, DatasetLoader, Task
from trainer.networks import validate_with_schema

registry: Registry[DatasetLoader] = Registry("dataset")
FILE_DATASETS = ("csv", "npz")
"""Built-ins reading a path on the training machine: only uploads may name them."""

Arrays = tuple[NDArray[Any], NDArray[Any]]


class DatasetError(ValueError):
    """User data that cannot be trained on; the message says what is wrong and where."""


class _NoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_samples: int = Field(default=1000, ge=20, le=1_000_000)
    n_features: int = Field(default=20, ge=1, le=10_000)
    n_classes: int = Field(default=3, ge=2, le=1000, description="classification only")
    task: Task = "classification"
    noise: float = Field(default=10.0, ge=0.0, description="regression only: target noise std")
    seed: int | None = Field(
        default=None, ge=0, le=2**32 - 1, description="default: the dataset's split seed"
    )


class CsvConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    target: str = Field(description="the column holding the label or target")


class NpzConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    max_bytes: int | None = Field(
        default=None, ge=1, description="refuse arrays that unpack to more bytes than this"
    )


def _digits() -> Arrays:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.float32).reshape(-1, 1, 8, 8), digits.target.astype(np.int64)


def _synthetic(
    *,
    n_samples: int,
    n_features: int,
    n_classes: int,
    task: Task,
    noise: float,
    seed: int | None,
) -> Arrays:
    from sklearn.datasets import make_classification, make_regression

    random_state = 0 if seed is None else seed
    if task == "regression":
        X, y = make_regression(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=max(1, n_features // 2),
            noise=noise,
            random_state=random_state,
        )
        return X.astype(np.float32), y.astype(np.float32)
    needed = math.ceil(math.log2(n_classes))
    if needed > n_features:
        raise DatasetError(
            f"synthetic data with {n_classes} classes needs at least {needed} features"
        )
    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=max(needed, min(n_features, max(2, n_features // 2))),
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        random_state=random_state,
    )
    return X.astype(np.float32), y.astype(np.int64)


def _csv(*, path: str, target: str) -> Arrays:
    file = Path(path)
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read CSV file {file.name}: {error}") from None
    if not header:
        raise DatasetError(f"CSV file {file.name} is empty")
    header = [name.strip() for name in header]
    if target not in header:
        raise DatasetError(
            f"CSV file {file.name} has no target column {target!r}; columns: {header}"
        )
    if len(header) < 2:
        raise DatasetError(f"CSV file {file.name} has no feature column besides {target!r}")
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
    return np.asarray(features, dtype=np.float32), _csv_labels(labels)


def _csv_labels(labels: list[str]) -> NDArray[Any]:
    """Numbers with a fractional part are regression targets (floats); anything else is a
    class label (strings, encoded later)."""
    try:
        numbers = np.asarray([float(label) for label in labels], dtype=np.float64)
    except ValueError:
        return np.asarray(labels)
    if len(numbers) and np.isfinite(numbers).all() and (numbers != np.round(numbers)).any():
        return numbers.astype(np.float32)
    return np.asarray(labels)


def _whole_numbers_as_labels(y: NDArray[Any]) -> NDArray[Any]:
    """A file's float array of whole numbers holds class labels (NumPy and pandas write labels
    as floats); floats with a fractional part are regression targets."""
    if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
        return y.astype(np.int64)
    return y


def _npz(*, path: str, max_bytes: int | None = None) -> Arrays:
    """Arrays `X` and `y` of an NPZ archive. Their sizes are read from the .npy headers
    before anything is unpacked: a small compressed file can unpack to gigabytes."""
    file = Path(path)
    try:
        if not zipfile.is_zipfile(file):
            raise DatasetError(
                f"NPZ file {file.name} is not a zip archive (np.savez and np.savez_compressed "
                "write one; a single .npy file is not an .npz)"
            )
        with zipfile.ZipFile(file) as archive:
            members = set(archive.namelist())
            missing = sorted(key for key in ("X", "y") if f"{key}.npy" not in members)
            if missing:
                raise DatasetError(f"NPZ file {file.name} lacks arrays {missing}")
            total = sum(_npy_bytes(archive, key, file.name) for key in ("X", "y"))
        if max_bytes is not None and total > max_bytes:
            raise DatasetError(
                f"NPZ file {file.name} unpacks to {total:,} bytes of arrays; this server "
                f"accepts at most {max_bytes:,}"
            )
        with np.load(file, allow_pickle=False) as loaded:
            return loaded["X"], _whole_numbers_as_labels(loaded["y"])
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"cannot read NPZ file {file.name}: {error}") from None


def _npy_bytes(archive: zipfile.ZipFile, key: str, name: str) -> int:
    """Bytes the member `key`.npy unpacks to, from its header alone."""
    with archive.open(f"{key}.npy") as member:
        try:
            version = np.lib.format.read_magic(member)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(member)
        except ValueError as error:
            raise DatasetError(f"NPZ file {name}: {key} is not a .npy array ({error})") from None
    if dtype.hasobject:
        raise DatasetError(f"NPZ file {name}: {key} holds Python objects; numbers are needed")
    return math.prod(shape) * dtype.itemsize


def _synthetic_task(**config: Any) -> Task:
    task: Task = config.get("task", "classification")
    return task


def _builtin(name: str, load: Any, schema: type[BaseModel], task: Any = None) -> None:
    """Register a built-in loader with the attributes a plugin's would carry."""
    load.config_schema = schema
    if task is not None:
        load.task = task
    registry.register(name)(load)


_builtin("digits", _digits, _NoConfig, "classification")
_builtin("synthetic", _synthetic, SyntheticConfig, _synthetic_task)
_builtin("csv", _csv, CsvConfig)
_builtin("npz", _npz, NpzConfig)


def loader(name: str) -> DatasetLoader:
    """The registered loader (raises `UnknownIdentifierError` listing the known names)."""
    return registry.entry(name)


def validated_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """`config` checked (and filled) by the loader's `config_schema`; see `networks`."""
    return validate_with_schema(loader(name), config)


def declared_task(name: str, config: dict[str, Any]) -> Task | None:
    """The task a loader declares for `config` (None: it is read from the targets' type)."""
    declared = getattr(loader(name), "task", None)
    if callable(declared):
        declared = declared(**config)
    if declared is None:
        return None
    if declared not in TASKS:
        raise ValueError(
            f"dataset {name!r} declares task {declared!r}; expected one of {list(TASKS)}"
        )
    task: Task = declared
    return task


def declared_shape(
    name: str, config: dict[str, Any], *, image: bool
) -> tuple[int, tuple[int, ...], int] | None:
    """Rows, one input's shape and the outputs a built-in loader will return for `config`,
    known without loading it (None: a file or a plugin, known once read). `image`: the
    shape a model taking images gets."""
    if name == "digits":
        return 1797, (1, 8, 8) if image else (64,), 10
    if name == "synthetic":
        synthetic = SyntheticConfig.model_validate(config)
        outputs = synthetic.n_classes if synthetic.task == "classification" else 1
        return synthetic.n_samples, (synthetic.n_features,), outputs
    return None

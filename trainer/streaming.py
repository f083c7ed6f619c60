"""Data that does not fit in memory: splits backed by `torch.utils.data.Dataset`s.

A dataset loader may return a mapping `{"train": Dataset, "val": Dataset, "test": Dataset}`
(test optional) instead of `(X, y)` arrays. Each item is a pair `(x, y)`: `x` one sample's
features (any shape; flattened for flat-input models), `y` a class index (an integer) or a
regression target (a float, or a float vector). Such splits are streamed through a
`DataLoader` each epoch, with `num_workers`/`pin_memory` as the dataset's `data_loader` block
says. The loader's Datasets own their preprocessing: the service neither standardizes nor
re-splits them (it cannot without reading every sample), and k-fold cross-validation needs
arrays.

Shuffling draws `torch.randperm(n, generator)` from the trial's own generator, exactly as the
in-memory path does, and the DataLoader gets a generator of its own for its worker seeds, so
the global RNG (dropout's) is not touched: the same data trains to the same weights either way.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from trainer.contracts import Task
from trainer.datasets import DatasetError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SplitDatasets = Mapping[str, "Dataset[Any]"]


@dataclass(frozen=True)
class LoaderSettings:
    """How a streamed split is read (the dataset config's `data_loader` block)."""

    num_workers: int = 0
    pin_memory: bool | None = None
    """None: pinned when training on a GPU (pinning only helps host-to-GPU copies)."""
    eval_batch_size: int = 1024


@dataclass(frozen=True)
class StreamedSplit:
    """One split read through a DataLoader; `flatten`: inputs reshaped to (n, features)."""

    dataset: Dataset[Any]
    length: int
    flatten: bool
    task: Task
    settings: LoaderSettings

    def __len__(self) -> int:
        return self.length

    def to(self, device: torch.device) -> StreamedSplit:
        return self  # batches move to the device as they are read

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        shuffle: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) on `device`, in `randperm(n, shuffle)` order when `shuffle` is given."""
        sampler: Sampler[int] = (
            SequentialSampler(self.dataset)  # type: ignore[arg-type]  # Sized at runtime
            if shuffle is None
            else _Permutation(self.length, shuffle)
        )
        pin = self.settings.pin_memory
        pin = device.type == "cuda" if pin is None else pin
        loader = DataLoader(
            self.dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.settings.num_workers,
            pin_memory=pin and device.type == "cuda",
            generator=torch.Generator().manual_seed(0),  # keeps the global RNG untouched
        )
        for x, y in loader:
            x = x.to(device, non_blocking=pin).float()
            if self.flatten:
                x = x.reshape(len(x), -1)
            # default_collate makes Python floats float64 and ints int64: cast as the arrays are
            y = (
                y.long().reshape(-1)
                if self.task == "classification"
                else y.float().reshape(len(y), -1)
            )
            yield x, y.to(device, non_blocking=pin)


class _Permutation(Sampler[int]):
    """One `randperm(n, generator)` per epoch, the in-memory path's order. (torch's
    RandomSampler draws a second, empty permutation each epoch, which would put the two
    paths' shuffles out of step from the second epoch on.)"""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n = n
        self.generator = generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def streamed_splits(
    splits: SplitDatasets,
    *,
    source: str,
    image: bool | None,
    task: Task | None,
    settings: LoaderSettings,
) -> tuple[dict[str, StreamedSplit], tuple[int, ...], int, Task]:
    """The splits a loader returned, checked: their StreamedSplits, one sample's input shape
    (as the model sees it), the output width and the task."""
    unknown = sorted(set(splits) - set(SPLITS))
    missing = [name for name in ("train", "val") if name not in splits]
    if unknown or missing:
        raise DatasetError(
            f"{source}: a mapping of Datasets needs keys 'train' and 'val' (and optionally "
            f"'test'); " + (f"missing {missing}" if missing else f"unexpected {unknown}")
        )
    lengths = {name: _length(dataset, f"{source} {name!r}") for name, dataset in splits.items()}
    x, y = _first_item(splits["train"], source)
    sample_shape = tuple(x.shape)
    if image and len(sample_shape) != 3:
        raise DatasetError(
            f"this model needs image inputs (channels, height, width); {source}'s train "
            f"samples have shape {sample_shape}"
        )
    flatten = image is False and len(sample_shape) != 1
    input_shape = (int(x.numel()),) if flatten else sample_shape
    found: Task = "regression" if y.is_floating_point() else "classification"
    task = task or found
    if task == "classification":
        if y.is_floating_point() or y.numel() != 1:
            raise DatasetError(
                f"{source}: classification items need an integer class index as y, got "
                f"{y.dtype} of shape {tuple(y.shape)}"
            )
        n_outputs = _class_count(splits["train"], source)
    else:
        if y.ndim > 1:
            raise DatasetError(f"{source}: regression targets must be a float or a 1-D vector")
        n_outputs = max(1, int(y.numel()))
    streamed = {
        name: StreamedSplit(dataset, lengths[name], flatten, task, settings)
        for name, dataset in splits.items()
        if lengths[name] > 0 or name != "test"
    }
    for name in ("train", "val"):
        if lengths[name] == 0:
            raise DatasetError(f"{source}: the {name!r} Dataset is empty")
    return streamed, input_shape, n_outputs, task


def fingerprint(source: str, config_json: str, splits: Mapping[str, StreamedSplit]) -> str:
    """Streamed data is not read twice to hash it: the loader, its config and the lengths."""
    digest = hashlib.sha256(f"streamed {source} {config_json}".encode())
    for name, split in sorted(splits.items()):
        digest.update(f"{name}={len(split)}".encode())
    return digest.hexdigest()


def materialize(split: StreamedSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of `split` as two tensors (the in-memory path, for data that fits)."""
    xs, ys = [], []
    for x, y in split.batches(split.settings.eval_batch_size, torch.device("cpu")):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def as_tensors(item: Any, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(item, tuple | list) and len(item) == 2):
        raise DatasetError(f"{source}: each Dataset item must be a pair (x, y)")
    x, y = (torch.as_tensor(part) for part in item)
    return x, y


def _first_item(dataset: Dataset[Any], source: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        item = dataset[0]
    except Exception as error:
        raise DatasetError(
            f"{source}: reading the first train item failed: {type(error).__name__}: {error}"
        ) from error
    return as_tensors(item, source)


def _length(dataset: Any, source: str) -> int:
    if not isinstance(dataset, Dataset) or not hasattr(dataset, "__len__"):
        raise DatasetError(
            f"{source}: expected a torch.utils.data.Dataset with a length, got "
            f"{type(dataset).__name__}"
        )
    return len(dataset)


def _class_count(dataset: Dataset[Any], source: str) -> int:
    """From `classes` (torchvision's convention) or `targets`; else one pass over the labels."""
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    targets = getattr(dataset, "targets", None)
    if targets is None:
        logger.info(
            "%s: reading every train label to count the classes "
            "(give the Dataset a `classes` or `targets` attribute to skip this)",
            source,
        )
        targets = [int(as_tensors(dataset[i], source)[1]) for i in range(len(dataset))]  # type: ignore[arg-type]
    labels = torch.as_tensor(targets).reshape(-1)
    if len(labels) == 0 or int(labels.min()) < 0:
        raise DatasetError(f"{source}: class indices must be integers from 0")
    return max(2, int(labels.max()) + 1)

"""Checkpoint files written whole and only as often as they are worth writing.

`AtomicCheckpointIO`: Lightning's torch.save IO, writing to a temporary file renamed over the
target. A resume checkpoint torn by SIGKILL would make the retry fail; `os.replace` is atomic on
POSIX and Windows, so a reader sees the previous complete file or the new one.

`BufferedCheckpointIO`: for digits-sized models one torch.save costs about as much as a fifth of
an epoch, and Keras's ModelCheckpoint with `save_best_only` rewrites its file on nearly every
early epoch. Saves are therefore kept in memory (tensors cloned, latest per path) and written
by `flush()`: `ResumeCheckpoint` flushes whenever it writes the resume state, so the files on
disk always agree with each other, and Lightning's teardown flushes at the end of fitting,
also when it fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, target)


class BufferedCheckpointIO(AtomicCheckpointIO):
    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[Path, dict[str, Any]] = {}

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        # Training goes on mutating the weights and optimizer state in place: snapshot them.
        # Lightning's loop progress and our own history are built afresh by each dump and never
        # mutated afterwards, so they are kept as they are (they are most of the dict's nodes).
        self._pending[Path(path)] = {
            key: value if key in _FRESH_ON_EACH_DUMP else snapshot(value)
            for key, value in checkpoint.items()
        }

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for path, checkpoint in pending.items():  # in save order: the resume state last
            super().save_checkpoint(checkpoint, path)

    def teardown(self) -> None:
        self.flush()
        super().teardown()


_FRESH_ON_EACH_DUMP = frozenset({"loops", "hpsearch"})


def snapshot(value: Any) -> Any:
    """Deep copy of the tensors in a checkpoint's (or an optimizer state's) dicts/lists/tuples,
    sharing everything else.

    Written out rather than `lightning_utilities.apply_to_collection`, whose generic walk costs
    about 2 ms per checkpoint here, as much as the rest of an epoch's bookkeeping.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list):
        return [snapshot(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(snapshot(item) for item in value)
    return value

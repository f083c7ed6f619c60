"""Checkpoint files that are never half-written, even when the process is killed mid-write."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save IO, writing to a temporary file renamed over the target.

    A resume checkpoint torn by SIGKILL would make the retry fail; `os.replace` is atomic on
    POSIX and Windows, so a reader sees the previous complete file or the new one.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, target)

"""Keras's EarlyStopping and ModelCheckpoint as Lightning callbacks, plus pruning and resume.

Lightning's own callbacks differ from Keras's (no `restore_best_weights`, no `baseline`
semantics, no `start_from_epoch`, patience counted in validation checks), and hpsearch's users
speak Keras, so the decision logic below follows keras/src/callbacks/early_stopping.py and
model_checkpoint.py line by line. Epochs are 0-based inside the logic, as in Keras.
"""

from __future__ import annotations

import logging
import operator
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint

from trainer.checkpoint_io import BufferedCheckpointIO
from trainer.config import CheckpointConfig, EarlyStoppingConfig
from trainer.lit_module import progress_of
from trainer.metrics import Mode, resolve_mode

logger = logging.getLogger(__name__)

Weights = dict[str, torch.Tensor]


class Reporter(Protocol):
    """Per-epoch progress for a pruner (the worker adapts an Optuna trial to this)."""

    def report(self, epoch: int, value: float) -> None: ...

    def should_prune(self) -> bool: ...


class _Monitor:
    """Keras's MonitorCallback: which way `monitor` improves, and by how much it must."""

    def __init__(self, monitor: str, mode: Mode, min_delta: float = 0.0) -> None:
        self.monitor = monitor
        minimize = resolve_mode(monitor, mode) == "min"
        self._better = operator.lt if minimize else operator.gt
        self.min_delta = -abs(min_delta) if minimize else abs(min_delta)

    def is_improvement(self, value: float, reference: float | None) -> bool:
        return reference is None or bool(self._better(value - self.min_delta, reference))


class KerasEarlyStopping(Callback):
    """`keras.callbacks.EarlyStopping`, same arguments and decisions.

    `restore_best_weights` restores the best epoch's weights when training ends, whether it
    stopped early or ran to `max_epochs`, as Keras 3 does. The state (wait, best, best weights)
    is saved in checkpoints so a resumed trial carries on counting.
    """

    def __init__(self, config: EarlyStoppingConfig) -> None:
        self.config = config
        self._monitor = _Monitor(config.monitor, config.mode, config.min_delta)
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.best_weights: Weights | None = None

    def update(self, epoch: int, logs: dict[str, float], weights: Callable[[], Weights]) -> bool:
        """Keras's `on_epoch_end`; returns True when training must stop."""
        current = logs.get(self.config.monitor)
        if current is None or epoch < self.config.start_from_epoch:
            return False
        if self.config.restore_best_weights and self.best_weights is None:
            self.best_weights = weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._monitor.is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.config.restore_best_weights:
                self.best_weights = weights()
            if self.config.baseline is None or self._monitor.is_improvement(
                current, self.config.baseline
            ):
                self.wait = 0
            return False
        if self.wait >= self.config.patience and epoch > 0:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        progress = progress_of(pl_module)
        if progress.diverged_at is not None:
            return
        weights = _copy_weights(pl_module)
        if self.update(progress.epoch_index, progress.latest, weights):
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.config.restore_best_weights and self.best_weights is not None:
            pl_module.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key in ("wait", "stopped_epoch", "best", "best_epoch", "best_weights"):
            setattr(self, key, state_dict[key])


class KerasModelCheckpoint(Checkpoint):
    """`keras.callbacks.ModelCheckpoint` writing a Lightning checkpoint to `best.ckpt`.

    With `save_best_only` the file is rewritten only when `monitor` strictly improves on the best
    so far (which starts at `initial_value_threshold`); otherwise on every `save_freq`. As in
    Keras, when `monitor` is missing from the logs (e.g. `val_loss` at a mid-epoch step save),
    the model is saved anyway, with a warning.
    """

    def __init__(self, config: CheckpointConfig, dirpath: Path) -> None:
        self.config = config
        self.path = dirpath / "best.ckpt"
        self._monitor = _Monitor(config.monitor, config.mode)
        self.best: float | None = config.initial_value_threshold
        self.saved = False
        self._trainer: pl.Trainer | None = None

    def should_save(self, logs: dict[str, float]) -> bool:
        """Keras's `_should_save_model`; records the new best when it says yes."""
        if not self.config.save_best_only:
            return True
        current = logs.get(self.config.monitor)
        if current is None:
            logger.warning("can save best model only with %s available", self.config.monitor)
            return True
        if self._monitor.is_improvement(current, self.best):
            self.best = current
            return True
        return False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer
        if isinstance(self.config.save_freq, int):
            progress_of(pl_module).step_listeners.append(self._on_step)

    def _on_step(self, step: int, logs: dict[str, float]) -> None:
        assert isinstance(self.config.save_freq, int)
        assert self._trainer is not None
        if step % self.config.save_freq == 0 and self.should_save(logs):
            self._save(self._trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        progress = progress_of(pl_module)
        if (
            self.config.save_freq == "epoch"
            and progress.diverged_at is None
            and self.should_save(progress.latest)
        ):
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=self.config.save_weights_only)
        self.saved = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "saved": self.saved}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict["best"]
        self.saved = state_dict["saved"]


class ResumeCheckpoint(Checkpoint):
    """Writes `last.ckpt`, the full training state a trial resumes from after a crash.

    Written at the end of an epoch once `every_s` seconds have passed since the last write
    (0: every epoch), and always at the final epoch; each write also flushes the pending `best`
    file (see checkpoint_io), so both files on disk describe the same moment. A diverged state
    is never written.
    """

    def __init__(self, dirpath: Path, every_s: float) -> None:
        self.path = dirpath / "last.ckpt"
        self.every_s = every_s
        self._last_write = time.monotonic()
        self.saved = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        progress = progress_of(pl_module)
        if progress.diverged_at is not None:
            return
        final = trainer.should_stop or progress.epoch_index + 1 >= (trainer.max_epochs or 0)
        if final or time.monotonic() - self._last_write >= self.every_s:
            trainer.save_checkpoint(self.path)
            checkpoint_io = trainer.strategy.checkpoint_io
            if isinstance(checkpoint_io, BufferedCheckpointIO):
                checkpoint_io.flush()
            self._last_write = time.monotonic()
            self.saved = True


class ReporterCallback(Callback):
    """Hands each epoch's row to `on_epoch`, reports the objective, and stops cleanly when told
    to prune or stop. The row of a diverging epoch is handed on too (it shows the divergence);
    nothing is reported for it."""

    def __init__(
        self,
        objective: str,
        reporter: Reporter | None,
        stop_requested: Callable[[], bool] | None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        self.objective = objective
        self.reporter = reporter
        self.stop_requested = stop_requested
        self.on_epoch = on_epoch
        self.pruned = False
        self.interrupted = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        progress = progress_of(pl_module)
        if self.on_epoch is not None:
            self.on_epoch(progress.latest)
        if progress.diverged_at is not None:
            return
        if self.reporter is not None:
            self.reporter.report(progress.epoch_index + 1, progress.latest[self.objective])
            if self.reporter.should_prune():
                self.pruned = True
                trainer.should_stop = True
        if self.stop_requested is not None and self.stop_requested():
            self.interrupted = True
            trainer.should_stop = True


class KeepCallerSignalHandlers(Callback):
    """Leaves SIGTERM to the caller of `run_trial` (who passed `stop_requested`).

    Lightning installs its own SIGTERM handler at fit and, on SIGTERM, raises SystemExit after
    the current batch, which here is a whole epoch: the epoch would end without its callbacks,
    the trial without a result and the resume checkpoint without that epoch. With this callback
    the handler that was in place before fitting stays in force; the caller's `stop_requested`
    then ends the trial cleanly at the epoch's end, as "interrupted", checkpointed. Lightning
    restores the same handler at teardown.
    """

    def __init__(self) -> None:
        self._handler = signal.getsignal(signal.SIGTERM)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread() and self._handler is not None:
            signal.signal(signal.SIGTERM, self._handler)


def _copy_weights(module: pl.LightningModule) -> Callable[[], Weights]:
    def copy() -> Weights:
        return {key: value.detach().clone() for key, value in module.state_dict().items()}

    return copy

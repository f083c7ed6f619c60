"""`TrialModule`: the LightningModule owning loss, regularization penalty and epoch metrics.

Speed: digits-sized models are dominated by per-step framework overhead (Lightning's hooks,
logging and DataLoader cost more than the model's arithmetic). So the data live on the device
as tensors, and ONE Lightning `training_step` trains a whole epoch of mini-batches with manual
optimization, then evaluates the validation split. Lightning's loop, hooks, callbacks and
checkpointing still run, once per epoch, where they matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F

from trainer import initializers, optimizers, regularizers
from trainer.config import TrialConfig
from trainer.data import DataSplits, Split
from trainer.metrics import ACCURACY, LEARNING_RATE, LOSS, VAL_ACCURACY, VAL_LOSS
from trainer.models import build_network, initialize, weight_layers

EVAL_CHUNK = 8192
"""Rows evaluated per forward pass outside training (bounds memory on large splits)."""

StepListener = Callable[[int, dict[str, float]], None]


class TrialModule(pl.LightningModule):
    def __init__(
        self, config: dict[str, Any], input_shape: tuple[int, ...], n_classes: int
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # so Lightning's load_from_checkpoint rebuilds the module
        self.config = TrialConfig.from_dict(config)
        self.automatic_optimization = False
        self.network = build_network(self.config.model, tuple(input_shape), n_classes)
        initialize(
            self.network,
            initializers.get(self.config.kernel_initializer),
            initializers.get(self.config.bias_initializer),
        )
        self._activity_regularizer = regularizers.get(self.config.activity_regularizer)
        kernel_regularizer = regularizers.get(self.config.kernel_regularizer)
        bias_regularizer = regularizers.get(self.config.bias_regularizer)
        self._penalized: list[tuple[regularizers.RegularizerLike, torch.Tensor]] = []
        for layer in weight_layers(self.network):
            if kernel_regularizer is not None:
                self._penalized.append((kernel_regularizer, layer.weight))
            if bias_regularizer is not None and layer.bias is not None:
                self._penalized.append((bias_regularizer, layer.bias))
        self._activations: list[torch.Tensor] = []
        if self._activity_regularizer is not None:
            self._watch_activations()
        self.data: DataSplits | None = None
        self.shuffle = torch.Generator().manual_seed(self.config.seed)
        self.epoch_logs: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.step_listeners: list[StepListener] = []
        self.diverged_at: int | None = None
        self.fit_device = "cpu"
        self.final_metrics: dict[str, tuple[float, float]] = {}
        self.optimizer_steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._activations.clear()  # the activity penalty sees this forward pass only
        logits: torch.Tensor = self.network(x)
        return logits

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return optimizers.get(self.config.optimizer).build(self.parameters())

    def attach_data(self, data: DataSplits) -> None:
        self.data = data

    def on_fit_start(self) -> None:
        if self.data is None:
            raise RuntimeError("attach_data() must be called before fitting")
        self.data = self.data.to(self.device)
        self.fit_device = str(self.device)

    def on_train_end(self) -> None:
        """Final metrics on the training device (Lightning moves the model off it at teardown).

        Runs after the callbacks' on_train_end, so EarlyStopping has restored the best weights.
        """
        assert self.data is not None
        if self.diverged_at is not None:
            return
        splits = {"train": self.data.train, "val": self.data.val, "test": self.data.test}
        self.final_metrics = {
            name: self.evaluate(split) for name, split in splits.items() if split is not None
        }

    def penalty(self) -> torch.Tensor | None:
        """Kernel and bias regularization summed over every Dense/Conv layer (None: no penalty)."""
        if not self._penalized:
            return None
        return torch.stack([regularizer(weight) for regularizer, weight in self._penalized]).sum()

    def _activity_penalty(self, batch_size: int) -> torch.Tensor | float:
        # Keras 3.14+ divides each layer's activity penalty by the batch size.
        if self._activity_regularizer is None:
            return 0.0
        total = sum(self._activity_regularizer(a) for a in self._activations)
        self._activations.clear()
        return total / batch_size

    def _watch_activations(self) -> None:
        """Record hidden layers' outputs (after the activation, as Keras's Dense returns them)."""
        modules = list(self.network.children())
        for position, module in enumerate(modules[:-1]):
            if position > 0 and isinstance(modules[position - 1], nn.Linear | nn.Conv2d):
                module.register_forward_hook(
                    lambda _m, _i, output: self._activations.append(output)
                )

    def loss(
        self, logits: torch.Tensor, y: torch.Tensor, penalty: torch.Tensor | None
    ) -> torch.Tensor:
        """Keras's total loss: data loss + kernel/bias penalty + activity penalty."""
        loss = F.cross_entropy(logits, y)
        if penalty is not None:
            loss = loss + penalty
        if self._activity_regularizer is not None:
            loss = loss + self._activity_penalty(len(y))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> None:
        assert self.data is not None
        # The torch optimizer itself, not Lightning's wrapper: its per-step hooks (precision
        # plugin, step profiling) cost more than a digits-sized step, and we use neither.
        optimizer = self.optimizers(use_pl_optimizer=False)
        assert isinstance(optimizer, torch.optim.Optimizer)
        train = self.data.train
        n, batch_size = len(train), self.config.batch_size
        order = torch.randperm(n, generator=self.shuffle).to(self.device, non_blocking=True)
        self.network.train()
        # Per-step metrics stay on the device and are reduced once per epoch (no sync per step).
        losses: list[torch.Tensor] = []
        hits: list[torch.Tensor] = []
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            x, y = train.X[index], train.y[index]
            logits = self.network(x) if self._activity_regularizer is None else self(x)
            loss = self.loss(logits, y, self.penalty())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            optimizer.step()
            self.optimizer_steps += 1
            losses.append(loss.detach())
            hits.append(logits.argmax(dim=1) == y)
            if self.step_listeners:
                running = {LOSS: self._mean_loss(losses, n, batch_size)}
                for listener in self.step_listeners:
                    listener(self.optimizer_steps, running)
        val_loss, val_accuracy = self.evaluate(self.data.val)
        self.epoch_logs = {
            LOSS: self._mean_loss(losses, n, batch_size),
            ACCURACY: torch.cat(hits).sum().item() / n,
            VAL_LOSS: val_loss,
            VAL_ACCURACY: val_accuracy,
            LEARNING_RATE: float(optimizer.param_groups[0]["lr"]),
        }
        epoch = self.current_epoch + 1
        self.history.append({"epoch": epoch, **self.epoch_logs})
        if not (math.isfinite(self.epoch_logs[LOSS]) and math.isfinite(val_loss)):
            self.diverged_at = epoch
            self.trainer.should_stop = True

    @staticmethod
    def _mean_loss(losses: list[torch.Tensor], n: int, batch_size: int) -> float:
        """Keras's running loss: the mean of batch losses weighted by batch size."""
        seen = min(len(losses) * batch_size, n)
        last = seen - (len(losses) - 1) * batch_size
        weights = torch.full((len(losses),), float(batch_size), device=losses[0].device)
        weights[-1] = last
        return float(torch.dot(torch.stack(losses), weights)) / seen

    @torch.no_grad()
    def evaluate(self, split: Split) -> tuple[float, float]:
        """(loss, accuracy) of the current weights in inference mode, penalty included."""
        was_training = self.network.training
        self.network.eval()
        loss_sum = 0.0
        correct = 0
        penalty = self.penalty()
        for start in range(0, len(split), EVAL_CHUNK):
            x = split.X[start : start + EVAL_CHUNK]
            y = split.y[start : start + EVAL_CHUNK]
            logits = self(x)
            loss_sum += float(self.loss(logits, y, penalty)) * len(y)
            correct += int((logits.argmax(dim=1) == y).sum())
        self.network.train(was_training)
        return loss_sum / len(split), correct / len(split)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hpsearch"] = {
            "history": list(self.history),
            "shuffle_state": self.shuffle.get_state(),
            "optimizer_steps": self.optimizer_steps,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("hpsearch")
        if state is not None:
            self.history = list(state["history"])
            self.shuffle.set_state(state["shuffle_state"])
            self.optimizer_steps = int(state["optimizer_steps"])

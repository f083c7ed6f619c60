"""`TrialModule`: the LightningModule owning loss, regularization penalty and epoch metrics.

Speed: digits-sized models are dominated by per-step framework overhead (Lightning's hooks,
logging and DataLoader cost more than the model's arithmetic). So the data live on the device
as tensors, and ONE Lightning `training_step` trains a whole epoch of mini-batches with manual
optimization, then evaluates the validation split. Lightning's loop, hooks, callbacks and
checkpointing still run, once per epoch, where they matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch

from trainer import initializers, optimizers, regularizers
from trainer.augmentation import Augmenter
from trainer.config import TrialConfig
from trainer.contracts import Task
from trainer.data import AnySplits, Split, StreamedSplit
from trainer.losses import loss_function, resolve_loss
from trainer.metrics import (
    ACCURACY,
    DATA_LOSS,
    LEARNING_RATE,
    LOSS,
    MAE,
    VAL_DATA_LOSS,
    VAL_LOSS,
)
from trainer.models import activity_layers, build_network, initialize, kernel_layers

EVAL_CHUNK = 8192
"""Rows evaluated per forward pass outside training (bounds memory on large splits)."""

StepListener = Callable[[int, dict[str, float]], None]


@dataclass
class TrialProgress:
    """What the training loop publishes for the callbacks and `run_trial`: one object, read
    through `progress_of`, instead of loose fields on the LightningModule."""

    history: list[dict[str, Any]] = field(default_factory=list)
    """One row per epoch: `epoch` (from 1), the epoch's metrics, and the training signals
    the problem detectors read (`kernel_grad_norms`, `bias_grad_norms`, `dead_units`)."""
    diverged_at: int | None = None
    """The epoch whose loss became non-finite (training stops there)."""
    optimizer_steps: int = 0
    step_listeners: list[StepListener] = field(default_factory=list)
    """Called after every optimizer step with the step count and the running loss."""
    final_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    """By split, evaluated on the training device once training ended (best weights)."""
    device: str = "cpu"

    @property
    def epoch_index(self) -> int:
        """The last epoch's index, from 0."""
        return int(self.history[-1]["epoch"]) - 1

    @property
    def latest(self) -> dict[str, Any]:
        """The last epoch's metrics."""
        return self.history[-1]


class TrialModule(pl.LightningModule):
    def __init__(
        self,
        config: dict[str, Any],
        input_shape: tuple[int, ...],
        n_classes: int,
        task: Task = "classification",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # so Lightning's load_from_checkpoint rebuilds the module
        self.config = TrialConfig.from_dict(config)
        self.task: Task = task
        self.n_outputs = n_classes
        self._data_loss = loss_function(resolve_loss(self.config.loss, task))
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
        self._gradient_targets: list[tuple[torch.Tensor | None, torch.Tensor | None]] = []
        for layer in kernel_layers(self.network):
            weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
            self._gradient_targets.append(
                (
                    weight if isinstance(weight, torch.Tensor) else None,
                    bias if isinstance(bias, torch.Tensor) else None,
                )
            )
            if kernel_regularizer is not None and isinstance(weight, torch.Tensor):
                self._penalized.append((kernel_regularizer, weight))
            if bias_regularizer is not None and isinstance(bias, torch.Tensor):
                self._penalized.append((bias_regularizer, bias))
        self._activations: list[torch.Tensor] = []
        if self._activity_regularizer is not None:
            self._watch_activations()
        self.data: AnySplits | None = None
        self.shuffle = torch.Generator().manual_seed(self.config.seed)
        self.progress = TrialProgress()
        self.augmenter: Augmenter | None = None  # made on the training device at fit start
        self._augment_state: torch.Tensor | None = None  # from a resume checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._activations.clear()  # the activity penalty sees this forward pass only
        logits: torch.Tensor = self.network(x)
        return logits

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return optimizers.get(self.config.optimizer).build(self.parameters())

    def attach_data(self, data: AnySplits) -> None:
        self.data = data

    def on_fit_start(self) -> None:
        if self.data is None:
            raise RuntimeError("attach_data() must be called before fitting")
        self.data = self.data.to(self.device)
        self.progress.device = str(self.device)
        if self.config.augmentation.active:
            self.augmenter = Augmenter(self.config.augmentation, self.config.seed, self.device)
            if self._augment_state is not None:
                self.augmenter.set_state(self._augment_state)

    def on_train_end(self) -> None:
        """Final metrics on the training device (Lightning moves the model off it at teardown).

        Runs after the callbacks' on_train_end, so EarlyStopping has restored the best weights.
        """
        assert self.data is not None
        if self.progress.diverged_at is not None:
            return
        splits = {"train": self.data.train, "val": self.data.val, "test": self.data.test}
        self.progress.final_metrics = {
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
        """Record the outputs the activity regularizer penalizes (`models.activity_layers`)."""
        for module in activity_layers(self.network):
            module.register_forward_hook(lambda _m, _i, output: self._activations.append(output))

    def loss(
        self, logits: torch.Tensor, y: torch.Tensor, penalty: torch.Tensor | None
    ) -> torch.Tensor:
        """Keras's total loss: data loss + kernel/bias penalty + activity penalty."""
        return self._with_penalties(self._data_loss(logits, y), penalty, len(y))

    def _with_penalties(
        self, data_loss: torch.Tensor, penalty: torch.Tensor | None, batch_size: int
    ) -> torch.Tensor:
        loss = data_loss
        if penalty is not None:
            loss = loss + penalty
        if self._activity_regularizer is not None:
            loss = loss + self._activity_penalty(batch_size)
        return loss

    @property
    def penalized(self) -> bool:
        """Whether any regularizer adds to the loss (else data loss and loss are equal)."""
        return bool(self._penalized) or self._activity_regularizer is not None

    def training_step(self, batch: Any, batch_idx: int) -> None:
        assert self.data is not None
        # The torch optimizer itself, not Lightning's wrapper: its per-step hooks (precision
        # plugin, step profiling) cost more than a digits-sized step, and we use neither.
        optimizer = self.optimizers(use_pl_optimizer=False)
        assert isinstance(optimizer, torch.optim.Optimizer)
        train = self.data.train
        n, batch_size = len(train), self.config.batch_size
        self.network.train()
        # Per-step metrics stay on the device and are reduced once per epoch (no sync per step).
        losses: list[torch.Tensor] = []
        data_losses: list[torch.Tensor] = []  # kept only when a penalty makes them differ
        hits: list[torch.Tensor] = []  # classification: correct predictions; regression: |error|
        penalized = self.penalized
        augment = self.augmenter
        progress = self.progress
        for x, y in self._shuffled_batches(train, batch_size):
            if augment is not None:
                x = augment(x)
            logits = self.network(x) if self._activity_regularizer is None else self(x)
            data_loss = self._data_loss(logits, y)
            loss = self._with_penalties(data_loss, self.penalty(), len(y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            optimizer.step()
            progress.optimizer_steps += 1
            losses.append(loss.detach())
            if penalized:
                data_losses.append(data_loss.detach())
            hits.append(self._hits(logits.detach(), y))
            if progress.step_listeners:
                running = {LOSS: self._mean_loss(losses, n, batch_size)}
                for listener in progress.step_listeners:
                    listener(progress.optimizer_steps, running)
        lr = float(optimizer.param_groups[0]["lr"])
        if not self.end_epoch(self.current_epoch + 1, losses, data_losses, hits, lr):
            self.trainer.should_stop = True

    def end_epoch(
        self,
        epoch: int,
        losses: Sequence[torch.Tensor],
        data_losses: Sequence[torch.Tensor],
        hits: Sequence[torch.Tensor],
        lr: float,
    ) -> bool:
        """Close an epoch of training steps: its training figures from the steps' losses
        and hits, the validation pass, and the epoch's row (`record_epoch`)."""
        assert self.data is not None
        n, batch_size = len(self.data.train), self.config.batch_size
        mean_loss = self._mean_loss(losses, n, batch_size)
        seen = torch.cat(list(hits))
        train = {
            LOSS: mean_loss,
            self.score: float(seen.sum()) / seen.numel(),
            DATA_LOSS: self._mean_loss(data_losses, n, batch_size) if data_losses else mean_loss,
        }
        return self.record_epoch(
            epoch, train, self.evaluate(self.data.val, count_dead_units=True), lr
        )

    @property
    def score(self) -> str:
        """The metric beside the loss: accuracy (classification) or mae (regression)."""
        return ACCURACY if self.task == "classification" else MAE

    def record_epoch(
        self, epoch: int, train: dict[str, float], val: dict[str, float], lr: float
    ) -> bool:
        """The epoch's row in `progress.history`: the training figures `train` (loss,
        data_loss and the `score`), the validation metrics `val` (as `evaluate` gives them),
        the learning rate and the gradient norms the epoch's last step left. A packed member
        (`trainer.packing`) gets `train` and `val` computed for the whole pack at once.
        Returns False when the losses became non-finite (it diverged)."""
        kernel_norms, bias_norms = self._gradient_norms()
        score = self.score
        logs = {
            LOSS: train[LOSS],
            score: train[score],
            VAL_LOSS: val[LOSS],
            f"val_{score}": val[score],
            DATA_LOSS: train[DATA_LOSS],
            VAL_DATA_LOSS: val[DATA_LOSS],
            LEARNING_RATE: lr,
        }
        signals = {
            "kernel_grad_norms": kernel_norms,
            "bias_grad_norms": bias_norms,
            "dead_units": val.get(DEAD_UNITS),
        }
        self.progress.history.append({"epoch": epoch, **logs, **signals})
        if not (math.isfinite(logs[LOSS]) and math.isfinite(val[LOSS])):
            self.progress.diverged_at = epoch
            return False
        return True

    def _shuffled_batches(
        self, split: Split | StreamedSplit, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of mini-batches in `randperm(n, self.shuffle)` order: index slices of
        device tensors, or a DataLoader over a streamed split (the same order)."""
        if isinstance(split, StreamedSplit):
            yield from split.batches(batch_size, self.device, self.shuffle)
            return
        order = torch.randperm(len(split), generator=self.shuffle).to(
            self.device, non_blocking=True
        )
        for start in range(0, len(split), batch_size):
            index = order[start : start + batch_size]
            yield split.X[index], split.y[index]

    @staticmethod
    def _eval_batches(
        split: Split | StreamedSplit, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(split, StreamedSplit):
            yield from split.batches(split.settings.eval_batch_size, device)
            return
        for start in range(0, len(split), EVAL_CHUNK):
            yield split.X[start : start + EVAL_CHUNK], split.y[start : start + EVAL_CHUNK]

    @staticmethod
    def _mean_loss(losses: Sequence[torch.Tensor], n: int, batch_size: int) -> float:
        """Keras's running loss: the mean of batch losses weighted by batch size."""
        seen = min(len(losses) * batch_size, n)
        last = seen - (len(losses) - 1) * batch_size
        weights = torch.full((len(losses),), float(batch_size), device=losses[0].device)
        weights[-1] = last
        return float(torch.dot(torch.stack(list(losses)), weights)) / seen

    def _hits(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return outputs.argmax(dim=1) == y
        return (outputs - y).abs()

    @torch.no_grad()
    def _gradient_norms(self) -> tuple[list[float], list[float | None]]:
        """The L2 norm of each kernel layer's kernel and bias gradient as the last optimizer
        step left them (one device sync); a kernel without a gradient counts 0, a layer
        without a bias None."""
        zero = torch.zeros((), device=self.device)
        missing = torch.full((), math.nan, device=self.device)
        norms: list[torch.Tensor] = []
        for weight, bias in self._gradient_targets:
            for tensor, absent in ((weight, zero), (bias, missing)):
                grad = None if tensor is None else tensor.grad
                norms.append(absent if grad is None else torch.linalg.vector_norm(grad))
        if not norms:
            return [], []
        values = torch.stack(norms).tolist()
        kernels = values[0::2]
        biases = [None if math.isnan(v) else v for v in values[1::2]]
        return kernels, biases

    @torch.no_grad()
    def evaluate(
        self,
        split: Split | StreamedSplit,
        count_dead_units: bool = False,
    ) -> dict[str, float]:
        """The split's metrics for the current weights in inference mode: loss (penalty
        included), data_loss (without it), and accuracy (classification) or mae, mse (the
        data MSE) and target_variance (the mean over target columns of their variance on
        this split) for regression."""
        was_training = self.network.training
        self.network.eval()
        units = _ActiveUnits(self.network) if count_dead_units else None
        loss_sum = 0.0
        data_loss_sum = 0.0
        hits = 0.0
        squares = 0.0
        rows = 0
        y_sum: torch.Tensor | float = 0.0
        y_squares: torch.Tensor | float = 0.0
        penalty = self.penalty()
        for x, y in self._eval_batches(split, self.device):
            if units is not None:
                units.next_batch()
            outputs = self(x)
            rows += len(y)
            data_loss = self._data_loss(outputs, y)
            loss = self._with_penalties(data_loss, penalty, len(y))
            total, data = torch.stack((loss, data_loss)).tolist()  # one device sync
            loss_sum += total * len(y)
            data_loss_sum += data * len(y)
            hits += float(self._hits(outputs, y).sum())
            if self.task == "regression":
                squares += float(((outputs - y) ** 2).sum())
                y_sum = y_sum + y.double().sum(dim=0)
                y_squares = y_squares + (y.double() ** 2).sum(dim=0)
        self.network.train(was_training)
        extra: dict[str, float] = {}
        dead = units.close() if units is not None else None
        if dead is not None:
            extra[DEAD_UNITS] = dead
        if self.task == "classification":
            return {
                LOSS: loss_sum / rows,
                DATA_LOSS: data_loss_sum / rows,
                ACCURACY: hits / rows,
                **extra,
            }
        cells = rows * self.n_outputs
        mean = torch.as_tensor(y_sum) / rows
        variance = float((torch.as_tensor(y_squares) / rows - mean**2).mean())
        return {
            LOSS: loss_sum / rows,
            DATA_LOSS: data_loss_sum / rows,
            MAE: hits / cells,
            "mse": squares / cells,
            "target_variance": variance,
            **extra,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hpsearch"] = {
            "history": list(self.progress.history),
            "shuffle_state": self.shuffle.get_state(),
            "optimizer_steps": self.progress.optimizer_steps,
        }
        if self.augmenter is not None:
            checkpoint["hpsearch"]["augment_state"] = self.augmenter.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("hpsearch")
        if state is not None:
            self.progress.history = list(state["history"])
            self.shuffle.set_state(state["shuffle_state"])
            self.progress.optimizer_steps = int(state["optimizer_steps"])
            self._augment_state = state.get("augment_state")
            if self.augmenter is not None and self._augment_state is not None:
                self.augmenter.set_state(self._augment_state)


DEAD_UNITS = "dead_units"


class _ActiveUnits:
    """Which units of each `nn.ReLU` output were ever positive over an evaluation (units:
    features of (N, F) outputs, channels of (N, C, ...) ones); forward hooks, removed by
    `close`. A ReLU module applied several times per forward is tracked per application."""

    def __init__(self, network: torch.nn.Module) -> None:
        self._ever: dict[tuple[int, int], torch.Tensor] = {}
        self._calls: dict[int, int] = {}
        self._handles = [
            module.register_forward_hook(self._hook(index))
            for index, module in enumerate(network.modules())
            if type(module) is torch.nn.ReLU
        ]

    def _hook(self, index: int) -> Callable[..., None]:
        def record(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            call = self._calls.get(index, 0)
            self._calls[index] = call + 1
            if output.dim() < 2:
                return
            dims = [d for d in range(output.dim()) if d != 1]
            active = output.amax(dim=dims) > 0
            key = (index, call)
            seen = self._ever.get(key)
            self._ever[key] = (
                active if seen is None or seen.shape != active.shape else seen | active
            )

        return record

    def next_batch(self) -> None:
        self._calls.clear()

    def close(self) -> float | None:
        """The fraction of units never active (None: the network has no ReLU)."""
        for handle in self._handles:
            handle.remove()
        if not self._ever:
            return None
        total = sum(active.numel() for active in self._ever.values())
        alive = torch.stack([active.sum() for active in self._ever.values()]).sum()
        return 1.0 - float(alive) / total


def progress_of(module: pl.LightningModule) -> TrialProgress:
    """The progress a `TrialModule` publishes (the callbacks get Lightning's base type)."""
    if not isinstance(module, TrialModule):
        raise TypeError(f"hpsearch's callbacks need a TrialModule, got {type(module).__name__}")
    return module.progress

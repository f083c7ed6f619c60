"""`run_trial`: train one configuration with Lightning and return a frozen `TrialResult`.

This is the only entry point the service uses. It owns device choice, seeding, the Lightning
Trainer and its callbacks, resuming from a checkpoint, k-fold cross-validation and the final
evaluation; the math lives in the modules it wires together.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from trainer import networks, plugins
from trainer.callbacks import (
    KeepCallerSignalHandlers,
    KerasEarlyStopping,
    KerasModelCheckpoint,
    Reporter,
    ReporterCallback,
    ResumeCheckpoint,
)
from trainer.checkpoint_io import BufferedCheckpointIO
from trainer.config import TrialConfig
from trainer.contracts import Task
from trainer.data import AnySplits, load_data, load_folds
from trainer.diagnosis import Diagnosis, diagnose
from trainer.lit_module import TrialModule, TrialProgress
from trainer.losses import resolve_loss
from trainer.metrics import (
    ACCURACY,
    DATA_LOSS,
    EPOCH_METRICS,
    LEARNING_RATE,
    LOSS,
    MAE,
    VAL_ACCURACY,
    VAL_DATA_LOSS,
    VAL_LOSS,
    VAL_MAE,
    check_metric_for_task,
    resolve_mode,
)
from trainer.problems import EpochSignals, Problem, detect_problems

PACK_MEMBER_MARK = "packed"
"""The key, in a checkpoint's `hpsearch` state, marking a pack member's resume state."""

Status = Literal["completed", "pruned", "diverged", "interrupted"]


@dataclass(frozen=True)
class EpochRecord:
    """One row of the learning curve; `epoch` counts from 1. Classification rows carry
    accuracy, regression rows mae (the other pair is None). `data_loss`/`val_data_loss` are
    the losses without the regularization penalty (None in a checkpoint from before them)."""

    epoch: int
    loss: float
    accuracy: float | None
    val_loss: float
    val_accuracy: float | None
    lr: float
    mae: float | None = None
    val_mae: float | None = None
    data_loss: float | None = None
    val_data_loss: float | None = None
    kernel_grad_norms: tuple[float, ...] | None = None
    """The L2 norm of each kernel layer's kernel gradient at the epoch's last step, input
    layer first (`models.kernel_layers` order)."""
    bias_grad_norms: tuple[float | None, ...] | None = None
    dead_units: float | None = None
    """The fraction of ReLU units never active on the validation set (None: no ReLU)."""


@dataclass(frozen=True)
class SplitMetrics:
    """A split's final metrics. `error` is what the fit diagnosis compares: 1 - accuracy
    (classification), or MSE / the train targets' variance (regression: 1 - R²)."""

    loss: float
    accuracy: float | None
    mae: float | None = None
    error_value: float | None = None
    data_loss: float | None = None
    """The loss without the regularization penalty."""

    @property
    def error(self) -> float:
        if self.error_value is not None:
            return self.error_value
        return 1.0 - (self.accuracy if self.accuracy is not None else math.nan)


@dataclass(frozen=True)
class FoldSummary:
    """k-fold cross-validation of the objective (each fold trained from scratch)."""

    values: tuple[float, ...]
    mean: float
    std: float


@dataclass(frozen=True)
class TrialResult:
    status: Status
    objective: str
    objective_value: float | None
    """The objective of the final model (best weights when restored), None if diverged."""
    train: SplitMetrics | None
    val: SplitMetrics | None
    test: SplitMetrics | None
    best_epoch: int | None
    best: EpochRecord | None
    history: tuple[EpochRecord, ...]
    epochs_run: int
    stopped_early: bool
    diagnosis: Diagnosis | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    resumed_from_epoch: int | None
    device: str
    seed: int
    wall_time_s: float
    data_fingerprint: str
    folds: FoldSummary | None = None
    message: str = ""
    task: Task = "classification"
    plugin_versions: dict[str, str] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    """Training problems found in the trial's epochs (`trainer.problems`), with evidence."""
    n_parameters: int | None = None
    """The trained network's trainable parameters (weights and biases, as Keras's
    `count_params()` of its trainable weights)."""
    """Distribution → version of the installed plugins this trial used (model, dataset,
    initializers, regularizers): which code produced the result."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def split_metrics(self) -> dict[str, float]:
        """The final metrics by split, flat: `train_loss`, `val_data_loss`, `test_accuracy`
        (classification) or `test_mae` (regression), `..._error`, for the splits there are."""
        metrics: dict[str, float] = {}
        for name in ("train", "val", "test"):
            values: SplitMetrics | None = getattr(self, name)
            if values is None:
                continue
            metrics[f"{name}_loss"] = values.loss
            if values.data_loss is not None:
                metrics[f"{name}_data_loss"] = values.data_loss
            if values.accuracy is not None:
                metrics[f"{name}_accuracy"] = values.accuracy
            if values.mae is not None:
                metrics[f"{name}_mae"] = values.mae
            metrics[f"{name}_error"] = values.error
        return metrics


def run_trial(
    config: TrialConfig,
    reporter: Reporter | None = None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    *,
    device: str = "auto",
    num_threads: int | None = None,
    stop_requested: Callable[[], bool] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrialResult:
    """Train `config` and evaluate it on train, validation and test splits.

    checkpoint_dir: where `best.ckpt` (Keras ModelCheckpoint) and `last.ckpt` (resume state) go;
        None writes no checkpoint.
    resume_from: a `last.ckpt` to continue from (same config; `max_epochs` may be larger).
    device: "auto" (a GPU when present), "cpu", "cuda" or "cuda:N".
    num_threads: torch CPU threads for this process (one worker per core: 1).
    stop_requested: polled each epoch; when it returns True the trial checkpoints and stops
        with status "interrupted" so another run can resume it.
    reporter: gets the objective each epoch; when it says prune, the trial stops as "pruned".
        With k-fold cross-validation, only the first fold reports.
    on_epoch: called with each epoch's `EpochRecord` as soon as the epoch ends (live curves).
        With k-fold cross-validation, only the first fold's epochs are passed on.
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    hooks = _Hooks(reporter, stop_requested, on_epoch)
    image = _IMAGE_INPUTS[networks.input_kind(config.model.type)]
    if resume_from is not None and is_pack_member_checkpoint(resume_from):
        from trainer import packing  # packing builds on this module

        member = packing.PackMember(
            config, reporter, _as_path(checkpoint_dir), Path(resume_from), on_epoch
        )
        return packing.run_pack([member], device=device, stop_requested=stop_requested)[0]
    if config.dataset.folds is None:
        data = load_data(config.dataset, image=image)
        check_task(config, data.task)
        return _fit(config, data, hooks, _as_path(checkpoint_dir), resume_from, device)
    if resume_from is not None:
        raise ValueError("resuming is not supported with k-fold cross-validation")
    started = time.perf_counter()
    results = []
    for fold, splits in enumerate(load_folds(config.dataset, image=image)):
        check_task(config, splits.task)
        fold_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / f"fold{fold}"
        fold_hooks = hooks if fold == 0 else _Hooks(None, stop_requested, None)
        result = _fit(config, splits, fold_hooks, fold_dir, None, device)
        results.append(result)
        if result.status != "completed" or result.objective_value is None:
            return result
    values = tuple(float(r.objective_value) for r in results if r.objective_value is not None)
    summary = FoldSummary(values, statistics.fmean(values), statistics.pstdev(values))
    first = results[0]
    return TrialResult(
        **{
            **{field: getattr(first, field) for field in first.__dataclass_fields__},
            "objective_value": summary.mean,
            "folds": summary,
            "wall_time_s": time.perf_counter() - started,
        }
    )


_IMAGE_INPUTS = {"flat": False, "image": True, "any": None}


def check_task(config: TrialConfig, task: Task) -> None:
    """Metrics and loss must exist for the data's task (known for sure only once loaded)."""
    check_metric_for_task(config.objective, task)
    if config.early_stopping is not None:
        check_metric_for_task(config.early_stopping.monitor, task, "early_stopping.monitor")
    check_metric_for_task(config.checkpoint.monitor, task, "checkpoint.monitor")
    resolve_loss(config.loss, task)


def used_plugin_versions(config: TrialConfig) -> dict[str, str]:
    """The distributions and versions of the plugins `config` names."""
    used = {("model", config.model.type), ("dataset", config.dataset.name)}
    for kind, identifier in (
        ("initializer", config.kernel_initializer),
        ("initializer", config.bias_initializer),
        ("regularizer", config.kernel_regularizer),
        ("regularizer", config.bias_regularizer),
        ("regularizer", config.activity_regularizer),
    ):
        if isinstance(identifier, dict):
            used.add((kind, str(identifier.get("class_name"))))
    return plugins.versions_of(used)


@dataclass(frozen=True)
class _Hooks:
    """What the caller wants to hear, or decide, at the end of each epoch."""

    reporter: Reporter | None
    stop_requested: Callable[[], bool] | None
    on_epoch: Callable[[EpochRecord], None] | None

    def epoch_rows(self) -> Callable[[dict[str, float]], None] | None:
        on_epoch = self.on_epoch
        if on_epoch is None:
            return None
        return lambda row: on_epoch(epoch_record(row))


def _fit(
    config: TrialConfig,
    data: AnySplits,
    hooks: _Hooks,
    checkpoint_dir: Path | None,
    resume_from: str | Path | None,
    device: str,
) -> TrialResult:
    started = time.perf_counter()
    accelerator, devices = resolve_device(device)
    resumed_from = None if resume_from is None else _epochs_done(resume_from)
    pl.seed_everything(config.seed, workers=False, verbose=False)
    module = TrialModule(config.to_dict(), data.input_shape, data.n_outputs, data.task)
    module.attach_data(data)
    watchers = _Callbacks.for_trial(config, hooks, checkpoint_dir)
    callbacks = watchers.all()
    with _quiet_lightning():
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            max_epochs=config.max_epochs,
            callbacks=callbacks,
            plugins=[BufferedCheckpointIO()],
            logger=False,
            enable_checkpointing=checkpoint_dir is not None,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            default_root_dir=checkpoint_dir,
        )
        trainer.fit(
            module,
            train_dataloaders=_EpochTicks(),
            ckpt_path=None if resume_from is None else str(resume_from),
        )
    return trial_result(
        config,
        module.progress,
        data,
        watchers.outcome(),
        resumed_from,
        started,
        trainable_parameters(module.network),
    )


def trainable_parameters(network: torch.nn.Module) -> int:
    """The network's trainable parameters (what a parameter-count objective minimizes)."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


@dataclass(frozen=True)
class _Callbacks:
    """The Lightning callbacks of one fit, by role (the result reads what they saw)."""

    reporting: ReporterCallback
    signals: KeepCallerSignalHandlers | None
    early_stopping: KerasEarlyStopping | None
    best_saver: KerasModelCheckpoint | None
    resume_saver: ResumeCheckpoint | None

    @classmethod
    def for_trial(
        cls, config: TrialConfig, hooks: _Hooks, checkpoint_dir: Path | None
    ) -> _Callbacks:
        best_saver = resume_saver = None
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            best_saver = KerasModelCheckpoint(config.checkpoint, checkpoint_dir)
            resume_saver = ResumeCheckpoint(checkpoint_dir, config.checkpoint.resume_every_s)
        stopping = config.early_stopping
        return cls(
            reporting=ReporterCallback(
                config.objective, hooks.reporter, hooks.stop_requested, hooks.epoch_rows()
            ),
            signals=None if hooks.stop_requested is None else KeepCallerSignalHandlers(),
            early_stopping=None if stopping is None else KerasEarlyStopping(stopping),
            best_saver=best_saver,
            resume_saver=resume_saver,
        )

    def outcome(self) -> Outcome:
        best_saver, resume_saver = self.best_saver, self.resume_saver
        return Outcome(
            pruned=self.reporting.pruned,
            interrupted=self.reporting.interrupted,
            stopped_early=self.early_stopping is not None and self.early_stopping.stopped_epoch > 0,
            best_checkpoint=str(best_saver.path) if best_saver and best_saver.saved else None,
            last_checkpoint=(
                str(resume_saver.path) if resume_saver and resume_saver.saved else None
            ),
        )

    def all(self) -> list[Callback]:
        """In the order Lightning must run them (reporting first, the savers last)."""
        ordered = (
            self.reporting,
            self.signals,
            self.early_stopping,
            self.best_saver,
            self.resume_saver,
        )
        return [callback for callback in ordered if callback is not None]


@dataclass(frozen=True)
class Outcome:
    """How a fit ended, as its callbacks (or a pack's per-member trackers) saw it."""

    pruned: bool
    interrupted: bool
    stopped_early: bool
    best_checkpoint: str | None
    last_checkpoint: str | None


def trial_result(
    config: TrialConfig,
    progress: TrialProgress,
    data: AnySplits,
    outcome: Outcome,
    resumed_from: int | None,
    started: float,
    n_parameters: int | None = None,
) -> TrialResult:
    """The `TrialResult` of a fit that ended (alone, or as a member of a pack)."""
    history = tuple(epoch_record(row) for row in progress.history)
    status: Status = "completed"
    message = ""
    train = val = test = None
    diagnosis = None
    objective_value = None
    if progress.diverged_at is not None:
        status = "diverged"
        message = (
            f"the loss became non-finite at epoch {progress.diverged_at}; "
            "a lower learning rate or a smaller initializer scale may help"
        )
    else:
        train_variance = _train_variance(data, progress.final_metrics["train"])
        final = {
            name: _split_metrics(values, data.task, train_variance)
            for name, values in progress.final_metrics.items()
        }
        train, val, test = final["train"], final["val"], final.get("test")
        diagnosis = diagnose(
            train.error,
            val.error,
            None if test is None else test.error,
            config.diagnosis,
            data.task,
        )
        objective_value = {
            LOSS: train.loss,
            ACCURACY: train.accuracy,
            MAE: train.mae,
            VAL_LOSS: val.loss,
            VAL_ACCURACY: val.accuracy,
            VAL_MAE: val.mae,
            DATA_LOSS: train.data_loss,
            VAL_DATA_LOSS: val.data_loss,
        }[config.objective]
        if outcome.pruned:
            status = "pruned"
        elif outcome.interrupted:
            status = "interrupted"
    best = _best_epoch(history, config.objective)
    return TrialResult(
        status=status,
        objective=config.objective,
        objective_value=objective_value,
        train=train,
        val=val,
        test=test,
        best_epoch=None if best is None else best.epoch,
        best=best,
        history=history,
        epochs_run=len(history),
        stopped_early=outcome.stopped_early,
        diagnosis=diagnosis,
        best_checkpoint=outcome.best_checkpoint,
        last_checkpoint=outcome.last_checkpoint,
        resumed_from_epoch=resumed_from,
        device=progress.device,
        seed=config.seed,
        wall_time_s=time.perf_counter() - started,
        data_fingerprint=data.fingerprint,
        message=message,
        task=data.task,
        plugin_versions=used_plugin_versions(config),
        n_parameters=n_parameters,
        problems=tuple(
            detect_problems(
                [EpochSignals(r.epoch, r.loss, r.kernel_grad_norms, r.dead_units) for r in history],
                config.diagnosis,
                underfits=diagnosis is not None and diagnosis.label.startswith("underfitting"),
                diverged_at=progress.diverged_at,
            )
        ),
    )


def _train_variance(data: AnySplits, train: dict[str, float]) -> float:
    """Regression's error scale: the train targets' variance (mean over target columns), as
    computed when the splits were made or, for streamed data, by the final evaluation."""
    if data.target_variance:
        return statistics.fmean(data.target_variance)
    return train.get("target_variance", 0.0)


def _split_metrics(values: dict[str, float], task: Task, train_variance: float) -> SplitMetrics:
    if task == "classification":
        return SplitMetrics(values[LOSS], values[ACCURACY], data_loss=values[DATA_LOSS])
    error = values["mse"] / train_variance if train_variance > 0 else math.inf
    return SplitMetrics(values[LOSS], None, values[MAE], error, values[DATA_LOSS])


def _best_epoch(history: tuple[EpochRecord, ...], objective: str) -> EpochRecord | None:
    finite = [
        r
        for r in history
        if getattr(r, objective) is not None and math.isfinite(getattr(r, objective))
    ]
    if not finite:
        return None
    pick = min if resolve_mode(objective, "auto") == "min" else max
    return pick(finite, key=lambda r: float(getattr(r, objective)))


def epoch_record(row: dict[str, Any]) -> EpochRecord:
    """A `TrialProgress.history` row as the `EpochRecord` callers get."""
    return EpochRecord(**_record(row))


def _record(row: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {name: row.get(name) for name in EPOCH_METRICS}
    record["epoch"] = int(row["epoch"])
    record[LEARNING_RATE] = row[LEARNING_RATE]
    for name in ("kernel_grad_norms", "bias_grad_norms"):
        values = row.get(name)
        record[name] = None if values is None else tuple(values)
    record["dead_units"] = row.get("dead_units")
    return record


def is_pack_member_checkpoint(checkpoint: str | Path) -> bool:
    """Whether `checkpoint` is the resume state of a pack member (`trainer.packing`): a
    trial that ran in a pack resumes in one."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return bool(state.get("hpsearch", {}).get(PACK_MEMBER_MARK, False))


def _epochs_done(checkpoint: str | Path) -> int:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return len(state.get("hpsearch", {}).get("history", []))


def resolve_device(device: str) -> tuple[str, list[int] | int]:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu", 1
    if device in ("cuda", "gpu"):
        return "gpu", [0]
    if device.startswith("cuda:") and device[5:].isdigit():
        return "gpu", [int(device[5:])]
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _as_path(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path)


class _EpochTicks:
    """A one-item "dataloader": Lightning runs one training_step per epoch (see TrialModule)."""

    def __iter__(self) -> Iterator[int]:
        yield 0

    def __len__(self) -> int:
        return 1


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's per-Trainer banner ("GPU available: ...") and its own deprecation
    noise during a trial."""
    lightning_logger = logging.getLogger("lightning.pytorch")
    level = lightning_logger.level
    lightning_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # device="cpu" on a GPU host is a choice (CPU workers beside GPU ones), not a slip.
            warnings.filterwarnings("ignore", message="GPU available but not used")
            # Lightning 2.6 calls torch 2.13's deprecated pytree API on every fit; a user can do
            # nothing about it, and as catch_warnings forgets what was shown, it would print
            # once a trial.
            warnings.filterwarnings(
                "ignore",
                message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                category=FutureWarning,
            )
            yield
    finally:
        lightning_logger.setLevel(level)

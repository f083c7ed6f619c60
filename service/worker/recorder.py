"""Writing a trial's life through the work queue: start, its epochs as they end, the result.

Each write is its own short transaction (`service.queue.work_queue`). Epochs are written as
they end, but at most once per `epoch_flush_s` (1 s) from the trial's start: whatever ended
since the last write, in one upsert. The dashboard sees a running trial's curve grow with at
most that delay (its trial page polls every 2.5 s), and a trial pays one round trip per second
for its curve instead of one per epoch (each epoch's write was most of the service's overhead
per trial); a trial shorter than that writes its curve with its result. A crash loses at most
the epochs not yet written; a retry resumes from the resume checkpoint and writes them again.
The study's best trial and status are brought up to date in the same transaction as the result
that changes them, and so is Optuna's record of the trial where the worker keeps the study in
memory (`OptunaMirror`): the trial's end is in both or in neither, whatever stops the worker.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from service.queue.work_queue import (
    Claim,
    EpochRow,
    Interruption,
    OptunaRecord,
    TrialOutcome,
    TrialStart,
    WorkQueue,
)
from service.states import TrialState
from service.worker.db_retry import retried
from trainer import EpochRecord, TrialResult

logger = logging.getLogger(__name__)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _labels(result: TrialResult) -> str | None:
    """`,a,b,` for the trial list's problem filter (None: no problem)."""
    labels = [problem.label for problem in result.problems]
    return f",{','.join(labels)}," if labels else None


def _finite_list(values: Sequence[float | None] | None) -> list[float | None] | None:
    """JSON has no NaN or infinity: those become null."""
    return None if values is None else [_finite(value) for value in values]


class TrialRecorder:
    """One trial's writes. Every write is idempotent, so each is retried while the database
    restarts (for up to `patience_s`): a trial pauses at its epoch's end instead of failing."""

    def __init__(
        self,
        queue: WorkQueue,
        trial_id: int,
        worker_id: int,
        patience_s: float = 300.0,
        epoch_flush_s: float = 1.0,
    ) -> None:
        self.queue = queue
        self.trial_id = trial_id
        self.worker_id = worker_id
        self.patience_s = patience_s
        self.epoch_flush_s = epoch_flush_s
        self._pending: list[EpochRecord] = []
        self._written: set[int] = set()  # epochs already in the database
        self._last_flush = time.monotonic()
        self.next_claim: Claim | None = None
        """The claim `finished` made in its transaction (see there)."""

    @retried("record the trial start")
    def started(
        self, optuna_number: int | None, params: dict[str, Any], device: str, resume_file: str
    ) -> None:
        """`resume_file`: where the trial's resume checkpoint will be, so a retry finds it
        even when this worker dies before the trial ends. `optuna_number` is None for a
        mirrored study's trial, which Optuna's storage gets at its end."""
        self.queue.start(self.trial_id, TrialStart(optuna_number, params, device, resume_file))

    def epoch(self, record: EpochRecord) -> None:
        self._pending.append(record)
        if time.monotonic() - self._last_flush >= self.epoch_flush_s:
            self.flush_epochs()

    @retried("record epochs")
    def flush_epochs(self) -> None:
        """Write the epochs that ended since the last write (kept if the write fails)."""
        if not self._pending:
            return
        if not self.queue.record_epochs(self.trial_id, [epoch_row(r) for r in self._pending]):
            # handed over while this worker was silent: its retry owns the curve; the result
            # will be dropped too (`finished`)
            logger.warning("trial %s no longer runs; its epochs are not written", self.trial_id)
        self._written.update(record.epoch for record in self._pending)
        self._pending = []
        self._last_flush = time.monotonic()

    @retried("record the result")
    def finished(
        self,
        result: TrialResult,
        state: TrialState,
        optuna: OptunaRecord,
        claim_next: bool = False,
        objective_values: Sequence[float] | None = None,
    ) -> int | None:
        """Record the trial's end; its Optuna number, or None if its result was dropped.

        `claim_next`: claim the worker's next trial in the same transaction, after the
        study's bookkeeping (so a study this result completes is not claimed again); what it
        got is in `next_claim` once the transaction has committed. `objective_values`: a
        multi-objective study's values, one per objective."""
        self.next_claim = None
        recorded = self.queue.finish(
            self.trial_id,
            self.worker_id,
            outcome_of(result, state, objective_values),
            optuna,
            self._unwritten(result.history),
            claim_next,
        )
        if recorded is None:
            return None
        self.next_claim = recorded.next_claim
        return recorded.optuna_number

    @retried("hand the trial over")
    def handed_over(
        self, result: TrialResult, reason: str, max_retries: int, optuna: OptunaRecord
    ) -> int | None:
        """The worker stops (SIGTERM): fail this trial and queue a retry resuming from its
        last checkpoint, for whichever worker comes next."""
        interruption = Interruption(
            reason, result.epochs_run, result.last_checkpoint, result.wall_time_s
        )
        return self.queue.hand_over(
            self.trial_id,
            self.worker_id,
            interruption,
            max_retries,
            optuna,
            self._unwritten(result.history),
        )

    @retried("record the failure")
    def failed(self, reason: str, optuna: OptunaRecord | None = None) -> int | None:
        pending = [epoch_row(r) for r in self._pending]  # its curve up to the failure
        return self.queue.fail(self.trial_id, self.worker_id, reason, optuna, pending)

    def _unwritten(self, history: Sequence[EpochRecord]) -> list[EpochRow]:
        return [epoch_row(r) for r in history if r.epoch not in self._written]


def epoch_row(record: EpochRecord) -> EpochRow:
    """An epoch's columns (JSON has no NaN or infinity: those become null)."""
    return {
        "epoch": record.epoch,
        "loss": _finite(record.loss),
        "accuracy": _finite(record.accuracy),
        "val_loss": _finite(record.val_loss),
        "val_accuracy": _finite(record.val_accuracy),
        "lr": _finite(record.lr),
        "mae": _finite(record.mae),
        "val_mae": _finite(record.val_mae),
        "data_loss": _finite(record.data_loss),
        "val_data_loss": _finite(record.val_data_loss),
        "kernel_grad_norms": _finite_list(record.kernel_grad_norms),
        "bias_grad_norms": _finite_list(record.bias_grad_norms),
        "dead_units": _finite(record.dead_units),
    }


def outcome_of(
    result: TrialResult, state: TrialState, objective_values: Sequence[float] | None = None
) -> TrialOutcome:
    """The trial's end as the queue records it."""
    value = _finite(result.objective_value) if state == TrialState.COMPLETE else None
    diagnosis = result.diagnosis
    columns = {
        "resumed_from_epoch": result.resumed_from_epoch,
        "metrics": _metrics(result),
        "best_metrics": None if result.best is None else _clean(vars(result.best)),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "diagnosis": None if diagnosis is None else diagnosis.label,
        "diagnosis_detail": None if diagnosis is None else diagnosis.explanation,
        "device": result.device,
        "duration_s": result.wall_time_s,
        "checkpoint_path": result.best_checkpoint,
        "last_checkpoint_path": result.last_checkpoint,
        "error": result.message or None,
        "plugin_versions": result.plugin_versions or None,
        "problems": [vars(problem) for problem in result.problems] or None,
        "problem_labels": _labels(result),
        "objective_values": None if objective_values is None else list(objective_values),
    }
    return TrialOutcome(state, value, columns)


def _metrics(result: TrialResult) -> dict[str, Any]:
    metrics: dict[str, Any] = {k: _finite(v) for k, v in result.split_metrics().items()}
    if result.folds is not None:
        metrics["cv_mean"] = _finite(result.folds.mean)
        metrics["cv_std"] = _finite(result.folds.std)
    return metrics


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _finite(v) if isinstance(v, float) else v for k, v in values.items()}

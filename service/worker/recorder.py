"""Writing a trial's life into the database: start, its epochs as they end, the result.

Each write is its own short transaction. Epochs are written as they end, but at most once per
`epoch_flush_s` (1 s): the first epoch at once, then whatever ended since the last write, in one
upsert. The dashboard sees a running trial's curve grow with at most that delay, and a short
trial pays one or two round trips for its curve instead of one per epoch (each epoch's write was
most of the service's overhead per trial). A crash loses at most the epochs not yet written; a
retry resumes from the resume checkpoint and writes them again. The study's best trial and
status are brought up to date in the same transaction as the result that changes them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import transaction
from service.db.models import Study, StudyStatus, Trial, TrialEpoch, TrialState, Worker, utcnow
from service.queue.reaper import hand_over
from service.queue.study_status import finish_study_if_done
from service.worker.db_retry import retried, with_db_retry
from trainer import EpochRecord, TrialResult

logger = logging.getLogger(__name__)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class TrialRecorder:
    """Every write is idempotent, so each is retried while the database restarts
    (for up to `patience_s`): a trial pauses at its epoch's end instead of failing."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        trial_id: int,
        worker_id: int,
        patience_s: float = 300.0,
        epoch_flush_s: float = 1.0,
    ) -> None:
        self.factory = factory
        self.trial_id = trial_id
        self.worker_id = worker_id
        self.patience_s = patience_s
        self.epoch_flush_s = epoch_flush_s
        self._pending: list[EpochRecord] = []
        self._written: set[int] = set()  # epochs already in the database
        self._last_flush = -math.inf

    @retried("record the trial start")
    def started(
        self, optuna_trial_id: int | None, params: dict[str, Any], device: str, resume_file: str
    ) -> None:
        """`resume_file`: where the trial's resume checkpoint will be, so a retry finds it
        even when this worker dies before the trial ends. `optuna_trial_id` (the Optuna trial's
        number) is None for a mirrored study's trial, which Optuna's storage gets at its end."""
        with transaction(self.factory) as session:
            # the trial's row before the worker's: one lock order everywhere
            session.execute(
                update(Trial)
                .where(Trial.id == self.trial_id)
                .values(
                    optuna_trial_id=optuna_trial_id,
                    params=params,
                    device=device,
                    last_checkpoint_path=resume_file,
                )
            )
            session.execute(
                update(Worker)
                .where(Worker.id == self.worker_id)
                .values(current_trial_id=self.trial_id, status="busy")
            )

    def epoch(self, record: EpochRecord) -> None:
        self._pending.append(record)
        if time.monotonic() - self._last_flush >= self.epoch_flush_s:
            self.flush_epochs()

    @retried("record epochs")
    def flush_epochs(self) -> None:
        """Write the epochs that ended since the last write (kept if the write fails)."""
        if not self._pending:
            return
        with transaction(self.factory) as session:
            _upsert_epochs(session, self.trial_id, self._pending)
            session.execute(
                update(Trial)
                .where(Trial.id == self.trial_id)
                .values(
                    epochs_run=func.max(Trial.epochs_run, self._pending[-1].epoch)
                    if session.get_bind().dialect.name == "sqlite"
                    else func.greatest(Trial.epochs_run, self._pending[-1].epoch),
                    heartbeat_at=utcnow(),
                )
            )
        self._written.update(record.epoch for record in self._pending)
        self._pending = []
        self._last_flush = time.monotonic()

    @retried("record the result")
    def finished(self, result: TrialResult, state: TrialState, optuna_trial_id: int) -> None:
        with transaction(self.factory) as session:
            trial = self._still_ours(session)
            if trial is None:
                return
            # the epochs not written yet, a resumed trial's first ones (from its checkpoint) too
            _upsert_epochs(session, self.trial_id, self._unwritten(result.history))
            trial.optuna_trial_id = optuna_trial_id
            trial.resumed_from_epoch = result.resumed_from_epoch
            trial.state = state
            trial.value = _finite(result.objective_value) if state == TrialState.COMPLETE else None
            trial.metrics = _metrics(result)
            trial.best_metrics = None if result.best is None else _clean(vars(result.best))
            trial.epochs_run = result.epochs_run
            trial.best_epoch = result.best_epoch
            trial.stopped_early = result.stopped_early
            if result.diagnosis is not None:
                trial.diagnosis = result.diagnosis.label
                trial.diagnosis_detail = result.diagnosis.explanation
            trial.device = result.device
            trial.duration_s = result.wall_time_s
            trial.checkpoint_path = result.best_checkpoint
            trial.last_checkpoint_path = result.last_checkpoint
            trial.error = result.message or None
            trial.finished_at = utcnow()
            self._release_worker(session)
            _update_study(session, trial)

    @retried("hand the trial over")
    def handed_over(
        self, result: TrialResult, reason: str, max_retries: int, optuna_trial_id: int
    ) -> None:
        """The worker stops (SIGTERM): fail this trial and queue a retry resuming from its
        last checkpoint, for whichever worker comes next."""
        with transaction(self.factory) as session:
            trial = self._still_ours(session)
            if trial is None:
                return
            _upsert_epochs(session, self.trial_id, self._unwritten(result.history))
            trial.optuna_trial_id = optuna_trial_id
            trial.epochs_run = result.epochs_run
            trial.last_checkpoint_path = result.last_checkpoint
            trial.duration_s = result.wall_time_s
            hand_over(session, trial, reason, max_retries)
            self._release_worker(session)
            _update_study(session, trial)

    @retried("record the failure")
    def failed(self, reason: str, optuna_trial_id: int | None = None) -> None:
        with transaction(self.factory) as session:
            trial = self._still_ours(session)
            if trial is None:
                return
            _upsert_epochs(session, self.trial_id, self._pending)  # its curve up to the failure
            if optuna_trial_id is not None:
                trial.optuna_trial_id = optuna_trial_id
            trial.state = TrialState.FAILED
            trial.error = reason
            trial.finished_at = utcnow()
            self._release_worker(session)
            _update_study(session, trial)

    def _still_ours(self, session: Session) -> Trial | None:
        """The trial, locked, if it still runs; None (and the worker released) if the reaper
        handed it over while this worker was silent past the grace period (a network split, a
        stopped process): its retry owns the result now, so this one is dropped, not written
        over the retry's bookkeeping."""
        trial = session.get_one(Trial, self.trial_id, with_for_update=True)
        if trial.state == TrialState.RUNNING:
            return trial
        logger.warning(
            "trial %s was handed over while this worker was silent (%s); its result is dropped",
            self.trial_id,
            trial.error or trial.state,
        )
        self._release_worker(session)
        return None

    def _unwritten(self, history: Sequence[EpochRecord]) -> list[EpochRecord]:
        return [record for record in history if record.epoch not in self._written]

    def _release_worker(self, session: Session) -> None:
        session.flush()  # the trial's row before the worker's: one lock order everywhere
        session.execute(
            update(Worker)
            .where(Worker.id == self.worker_id)
            .values(current_trial_id=None, status="idle")
        )


def fail_study(
    factory: sessionmaker[Session], study_id: int, reason: str, patience_s: float = 300.0
) -> None:
    """A study that cannot run at all (bad spec for this sampler, missing data set...)."""
    with_db_retry(
        lambda: _fail_study(factory, study_id, reason), "fail the study", patience_s=patience_s
    )


def _fail_study(factory: sessionmaker[Session], study_id: int, reason: str) -> None:
    with transaction(factory) as session:
        study = session.get_one(Study, study_id)
        study.status = StudyStatus.FAILED
        study.error = reason
        study.finished_at = utcnow()
        for trial in session.scalars(
            select(Trial).where(Trial.study_id == study_id, Trial.state == TrialState.RUNNING)
        ):
            trial.state = TrialState.FAILED
            trial.error = f"study failed: {reason}"
            trial.finished_at = utcnow()


def _upsert_epochs(session: Session, trial_id: int, records: Sequence[EpochRecord]) -> None:
    """Insert or overwrite the epochs' rows in one statement (PostgreSQL's and SQLite's
    INSERT ... ON CONFLICT DO UPDATE; a retry or a resumed trial writes some epochs again)."""
    if not records:
        return
    rows = [
        {
            "trial_id": trial_id,
            "epoch": record.epoch,
            "loss": _finite(record.loss),
            "accuracy": _finite(record.accuracy),
            "val_loss": _finite(record.val_loss),
            "val_accuracy": _finite(record.val_accuracy),
            "lr": _finite(record.lr),
        }
        for record in records
    ]
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    statement = dialect.insert(TrialEpoch).values(rows)
    values = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["trial_id", "epoch"],
            set_={name: statement.excluded[name] for name in values},
        )
    )


def _metrics(result: TrialResult) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        values = getattr(result, split)
        if values is not None:
            metrics[f"{split}_loss"] = _finite(values.loss)
            metrics[f"{split}_accuracy"] = _finite(values.accuracy)
            metrics[f"{split}_error"] = _finite(values.error)
    if result.folds is not None:
        metrics["cv_mean"] = _finite(result.folds.mean)
        metrics["cv_std"] = _finite(result.folds.std)
    return metrics


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _finite(v) if isinstance(v, float) else v for k, v in values.items()}


def _update_study(session: Session, trial: Trial) -> None:
    session.flush()
    study = session.get_one(Study, trial.study_id, with_for_update=True)
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        better = (
            study.best_value is None
            or (study.direction == "minimize" and trial.value < study.best_value)
            or (study.direction == "maximize" and trial.value > study.best_value)
        )
        if better:
            study.best_value = trial.value
            study.best_trial_id = trial.id
    session.flush()
    finish_study_if_done(session, study)

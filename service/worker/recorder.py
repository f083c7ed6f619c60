"""Writing a trial's life into the database: start, each epoch as it ends, the result.

Each write is its own short transaction, so the dashboard sees a running trial's curve grow and
a crash loses at most the epoch in flight. The study's best trial and status are brought up to
date in the same transaction as the result that changes them.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import transaction
from service.db.models import Study, StudyStatus, Trial, TrialEpoch, TrialState, Worker, utcnow
from service.queue.claim import running_count
from trainer import EpochRecord, TrialResult

_FINAL_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class TrialRecorder:
    def __init__(self, factory: sessionmaker[Session], trial_id: int, worker_id: int) -> None:
        self.factory = factory
        self.trial_id = trial_id
        self.worker_id = worker_id

    def started(self, optuna_trial_id: int, params: dict[str, Any], device: str) -> None:
        with transaction(self.factory) as session:
            trial = session.get_one(Trial, self.trial_id)
            trial.optuna_trial_id = optuna_trial_id
            trial.params = params
            trial.device = device
            worker = session.get(Worker, self.worker_id)
            if worker is not None:
                worker.current_trial_id = self.trial_id
                worker.status = "busy"

    def epoch(self, record: EpochRecord) -> None:
        with transaction(self.factory) as session:
            session.merge(
                TrialEpoch(
                    trial_id=self.trial_id,
                    epoch=record.epoch,
                    loss=_finite(record.loss),
                    accuracy=_finite(record.accuracy),
                    val_loss=_finite(record.val_loss),
                    val_accuracy=_finite(record.val_accuracy),
                    lr=_finite(record.lr),
                )
            )
            trial = session.get_one(Trial, self.trial_id)
            trial.epochs_run = max(trial.epochs_run, record.epoch)
            trial.heartbeat_at = utcnow()

    def finished(self, result: TrialResult, state: TrialState) -> None:
        with transaction(self.factory) as session:
            trial = session.get_one(Trial, self.trial_id)
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

    def failed(self, reason: str) -> None:
        with transaction(self.factory) as session:
            trial = session.get_one(Trial, self.trial_id)
            trial.state = TrialState.FAILED
            trial.error = reason
            trial.finished_at = utcnow()
            self._release_worker(session)
            _update_study(session, trial)

    def _release_worker(self, session: Session) -> None:
        worker = session.get(Worker, self.worker_id)
        if worker is not None:
            worker.current_trial_id = None
            worker.status = "idle"


def fail_study(factory: sessionmaker[Session], study_id: int, reason: str) -> None:
    """A study that cannot run at all (bad spec for this sampler, missing data set...)."""
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


def _metrics(result: TrialResult) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        values = getattr(result, split)
        if values is not None:
            metrics[f"{split}_loss"] = _finite(values.loss)
            metrics[f"{split}_accuracy"] = _finite(values.accuracy)
            metrics[f"{split}_error"] = _finite(values.error)
    if result.folds is not None:
        metrics["cv_mean"] = result.folds.mean
        metrics["cv_std"] = result.folds.std
    return metrics


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _finite(v) if isinstance(v, float) else v for k, v in values.items()}


def _update_study(session: Session, trial: Trial) -> None:
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


def finish_study_if_done(session: Session, study: Study) -> None:
    """Completed when n_trials trials finished, cancelled once a cancel took effect, completed
    (with a note) when the time budget ran out; only when no trial is running any more."""
    if study.status not in (StudyStatus.QUEUED, StudyStatus.RUNNING):
        return
    running = session.scalar(select(running_count(study.id))) or 0
    finished = (
        session.scalar(
            select(func.count(Trial.id)).where(
                Trial.study_id == study.id, Trial.state.in_(_FINAL_STATES)
            )
        )
        or 0
    )
    now = utcnow()
    timed_out = (
        study.timeout_s is not None
        and study.started_at is not None
        and now - study.started_at > timedelta(seconds=study.timeout_s)
    )
    if running:
        return
    if study.cancel_requested:
        study.status = StudyStatus.CANCELLED
    elif finished >= study.n_trials:
        study.status = StudyStatus.COMPLETED
    elif timed_out:
        study.status = StudyStatus.COMPLETED
        study.error = f"time budget of {study.timeout_s:g} s ran out after {finished} trials"
    else:
        return
    study.finished_at = now

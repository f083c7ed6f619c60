"""The work queue on PostgreSQL and SQLite (see `service.queue.work_queue` for the contract and
the lock order).

The claim, the reaper, giving back claims and the study's end live in their own modules
(`claim`, `reaper`, `release`, `study_status`); this class puts them behind the protocol and
holds a trial's own writes: its start, its epochs and its end. The two dialects differ only in
how a claim holds a study (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: its one write lock,
taken by BEGIN IMMEDIATE, see `create_db_engine`) and in their upsert and GREATEST spellings.

The hot writes are Core statements built once per process, values bound at execution:
ORM-enabled DML through the session, and compiling a multi-row INSERT anew for each flush,
cost more Python time per trial than running the statements (bench/README.md).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Executable,
    Float,
    Integer,
    and_,
    bindparam,
    case,
    cast,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import transaction
from service.db.models import Dataset, Study, StudyStatus, Trial, TrialEpoch, Worker, utcnow
from service.queue import claim as claims
from service.queue.reaper import end_stalled_studies, hand_over, reap_lost_trials
from service.queue.release import release_claims
from service.queue.study_status import PROGRESS_COLUMNS, StudyProgress, finish_if_done
from service.queue.work_queue import (
    Claim,
    EpochRow,
    Interruption,
    LostTrial,
    OptunaNumber,
    OptunaRecord,
    Recorded,
    TrialOutcome,
    TrialStart,
    UploadedData,
)
from service.states import TrialState

logger = logging.getLogger(__name__)


class _TrialHandedOverError(Exception):
    """The trial no longer runs (the reaper handed it over): roll back what was written."""


class SqlWorkQueue:
    """`WorkQueue` on the database `factory`'s engine is bound to (on SQLite, an engine made
    with `immediate=True`: a claim must begin with the write lock)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory
        bind = factory.kw["bind"]
        self.dialect_name: str = bind.dialect.name

    @property
    def skips_locked(self) -> bool:
        return self.dialect_name != "sqlite"

    # -- workers --

    def register_worker(self, host: str, pid: int, device: str) -> int:
        with transaction(self.factory) as session:
            worker = Worker(host=host, pid=pid, device=device, status="idle")
            session.add(worker)
            session.flush()
            return worker.id

    def worker_stopped(self, worker_id: int) -> None:
        with transaction(self.factory) as session:
            worker = session.get(Worker, worker_id)
            if worker is not None:
                worker.status = "stopped"
                worker.current_trial_id = None

    def heartbeat(self, worker_id: int, trial_ids: Sequence[int]) -> None:
        with transaction(self.factory) as session:
            now = utcnow()
            for trial_id in sorted(trial_ids):  # (in id order: two packs never cross)
                trial = session.get(Trial, trial_id)
                if trial is not None and trial.state == TrialState.RUNNING:
                    trial.heartbeat_at = now
                    session.flush()
            worker = session.get(Worker, worker_id)
            if worker is not None:
                worker.heartbeat_at = now

    def live_workers(self, grace_s: float) -> int:
        return claims.live_workers(self.factory, grace_s)

    # -- claims --

    def claim(self, worker_id: int) -> Claim | None:
        return claims.claim_trial(self.factory, worker_id)

    def claim_more(self, worker_id: int, study_id: int) -> Claim | None:
        return claims.claim_more(self.factory, worker_id, study_id)

    def work_remains(self) -> bool:
        return claims.work_remains(self.factory)

    def release(self, worker_id: int) -> None:
        with transaction(self.factory) as session:
            release_claims(session, worker_id)

    # -- a trial's life --

    def start(self, trial_id: int, start: TrialStart) -> None:
        with transaction(self.factory) as session:  # (the claim marked the worker busy)
            session.connection().execute(
                _TRIAL_UPDATE,
                {
                    "trial_id": trial_id,
                    "optuna_trial_id": start.optuna_number,
                    "params": start.params,
                    "device": start.device,
                    "last_checkpoint_path": start.resume_location,
                },
            )

    def record_epochs(self, trial_id: int, epochs: Sequence[EpochRow]) -> bool:
        if not epochs:
            return True
        with transaction(self.factory) as session:
            connection = session.connection()
            # the trial's row first (it locks it, as a trial's end does), then its epochs'
            running = connection.execute(
                _epochs_run_raised(connection.dialect.name),
                {"trial_id": trial_id, "epoch": epochs[-1]["epoch"], "now": utcnow()},
            ).first()
            if running is None:
                return False
            _upsert_epochs(connection, trial_id, epochs)
        return True

    def finish(
        self,
        trial_id: int,
        worker_id: int,
        outcome: TrialOutcome,
        optuna: OptunaRecord,
        epochs: Sequence[EpochRow] = (),
        claim_next: bool = False,
    ) -> Recorded | None:
        try:
            with transaction(self.factory) as session:
                connection = session.connection()
                number = _optuna_number(connection, optuna)
                study_id = connection.execute(
                    _RUNNING_TRIAL_ENDED,
                    {
                        **outcome.columns,
                        "trial_id": trial_id,
                        "optuna_trial_id": number,
                        "state": outcome.state,
                        "value": outcome.value,
                        "finished_at": utcnow(),
                    },
                ).scalar_one_or_none()
                if study_id is None:
                    raise _TrialHandedOverError
                # the epochs not written yet, a resumed trial's first ones (from its checkpoint)
                _upsert_epochs(connection, trial_id, epochs)
                _update_study(connection, study_id, trial_id, outcome.value)
                # Locks: the trial's row first (as the heartbeat and the reaper take it
                # first too), the study's, then a claim's (other studies' without waiting,
                # the new trial's) and this worker's, which only this worker's own
                # transactions and a reaper that already holds the trial's row take.
                claimed = claims.claim_in(session, worker_id) if claim_next else None
                if claimed is None:
                    claims.set_worker_trial(connection, worker_id, None)
        except _TrialHandedOverError:
            self._drop(trial_id, worker_id)
            return None
        return Recorded(number, claimed)

    def hand_over(
        self,
        trial_id: int,
        worker_id: int,
        interruption: Interruption,
        max_retries: int,
        optuna: OptunaRecord,
        epochs: Sequence[EpochRow] = (),
    ) -> int | None:
        try:
            with transaction(self.factory) as session:
                number = _optuna_number(session.connection(), optuna)
                trial = _still_running(session, trial_id)
                _upsert_epochs(session.connection(), trial_id, epochs)
                trial.optuna_trial_id = number
                trial.epochs_run = interruption.epochs_run
                trial.last_checkpoint_path = interruption.last_checkpoint
                trial.duration_s = interruption.duration_s
                hand_over(session, trial, interruption.reason, max_retries)
                _ended(session, trial, worker_id)
        except _TrialHandedOverError:
            self._drop(trial_id, worker_id)
            return None
        return number

    def fail(
        self,
        trial_id: int,
        worker_id: int,
        reason: str,
        optuna: OptunaRecord | None = None,
        epochs: Sequence[EpochRow] = (),
    ) -> int | None:
        try:
            with transaction(self.factory) as session:
                number = None if optuna is None else _optuna_number(session.connection(), optuna)
                trial = _still_running(session, trial_id)
                _upsert_epochs(session.connection(), trial_id, epochs)  # its curve to the end
                if number is not None:
                    trial.optuna_trial_id = number
                trial.state = TrialState.FAILED
                trial.error = reason
                trial.finished_at = utcnow()
                _ended(session, trial, worker_id)
        except _TrialHandedOverError:
            self._drop(trial_id, worker_id)
            return None
        return number

    def fail_study(self, study_id: int, reason: str) -> None:
        with transaction(self.factory) as session:
            # its running trials' rows before the study's, as a trial's end locks them
            for trial in session.scalars(
                select(Trial)
                .where(Trial.study_id == study_id, Trial.state == TrialState.RUNNING)
                .order_by(Trial.id)
                .with_for_update()
            ):
                trial.state = TrialState.FAILED
                trial.error = f"study failed: {reason}"
                trial.finished_at = utcnow()
            session.flush()
            study = session.get_one(Study, study_id, with_for_update=True)
            study.status = StudyStatus.FAILED
            study.error = reason
            study.finished_at = utcnow()

    def reap(self, grace_s: float, max_retries: int) -> list[LostTrial]:
        lost = reap_lost_trials(self.factory, grace_s, max_retries)
        end_stalled_studies(self.factory)
        return lost

    def uploaded_data(self, dataset_id: int) -> UploadedData | None:
        with self.factory() as session:
            row = session.get(Dataset, dataset_id)
        if row is None:
            return None
        return UploadedData(row.id, row.path, row.format, row.target, row.task, row.sha256)

    def _drop(self, trial_id: int, worker_id: int) -> None:
        """The trial no longer runs: the reaper handed it over while this worker was silent
        past the grace period (a network split, a stopped process), and its retry owns the
        result now, so this one is dropped, not written over the retry's bookkeeping (or this
        is the retry of a write that committed but whose answer was lost). The worker is
        released, and so is a claim that such a lost write made (it holds no other trial)."""
        with transaction(self.factory) as session:
            trial = session.get_one(Trial, trial_id)
            logger.warning(
                "trial %s no longer runs (%s: %s); this worker's result is not written",
                trial_id,
                trial.state,
                trial.error or "no error",
            )
            release_claims(session, worker_id)
            claims.set_worker_trial(session.connection(), worker_id, None)


def _optuna_number(connection: Connection, optuna: OptunaRecord) -> int:
    if isinstance(optuna, OptunaNumber):
        return optuna.number
    return optuna.write(connection)


def _still_running(session: Session, trial_id: int) -> Trial:
    """The trial, locked, if it still runs; else `_TrialHandedOverError`."""
    trial = session.get_one(Trial, trial_id, with_for_update=True)
    if trial.state != TrialState.RUNNING:
        raise _TrialHandedOverError
    return trial


def _ended(session: Session, trial: Trial, worker_id: int) -> None:
    """After the trial's row: the study's, then the worker's, as `finish` locks them
    (`hand_over` has locked the study already)."""
    session.flush()
    _update_study(session.connection(), trial.study_id, trial.id, None)
    claims.set_worker_trial(session.connection(), worker_id, None)


_TRIAL_UPDATE = update(Trial).where(Trial.id == bindparam("trial_id"))
"""SET takes the columns named in the execution's parameters."""

_RUNNING_TRIAL_ENDED = (
    update(Trial)
    .where(Trial.id == bindparam("trial_id"), Trial.state == TrialState.RUNNING)
    .returning(Trial.study_id)
)
"""A trial's end, if it still runs (none returned: the reaper handed it over)."""

_CANDIDATE = cast(bindparam("value", type_=Float), Float)  # typed for PostgreSQL even when NULL
_BETTER = and_(
    _CANDIDATE.is_not(None),
    or_(
        Study.best_value.is_(None),
        and_(Study.direction == "minimize", Study.best_value > _CANDIDATE),
        and_(Study.direction == "maximize", Study.best_value < _CANDIDATE),
    ),
)
_BEST_TRIAL_KEPT = (
    update(Study)
    .where(Study.id == bindparam("study_id"))
    .values(
        best_value=case((_BETTER, _CANDIDATE), else_=Study.best_value),
        best_trial_id=case(
            (_BETTER, bindparam("trial_id", type_=Integer)), else_=Study.best_trial_id
        ),
    )
    .returning(*PROGRESS_COLUMNS)
)
"""The study's best trial after one of its trials ended with `value` (NULL: no objective);
it locks the study's row and returns what decides whether the study is over."""


def _update_study(
    connection: Connection, study_id: int, trial_id: int, completed_value: float | None
) -> None:
    """The study's best trial and status, after a trial of it ended (`completed_value`: its
    objective if it completed with one)."""
    progress = connection.execute(
        _BEST_TRIAL_KEPT,
        {"study_id": study_id, "trial_id": trial_id, "value": completed_value},
    ).one()
    finish_if_done(connection, study_id, StudyProgress(*progress))


_EPOCH_COLUMNS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "mae",
    "val_mae",
    "data_loss",
    "val_data_loss",
    "kernel_grad_norms",
    "bias_grad_norms",
    "dead_units",
)


def _upsert_epochs(connection: Connection, trial_id: int, epochs: Sequence[EpochRow]) -> None:
    """Insert or overwrite the epochs' rows in one batch (a retry or a resumed trial writes
    some epochs again)."""
    if not epochs:
        return
    rows: list[dict[str, Any]] = [
        {"trial_id": trial_id, "epoch": row["epoch"], **{c: row.get(c) for c in _EPOCH_COLUMNS}}
        for row in epochs
    ]
    connection.execute(_epoch_upsert(connection.dialect.name), rows)


@functools.cache
def _epoch_upsert(dialect_name: str) -> Executable:
    """PostgreSQL's and SQLite's INSERT ... ON CONFLICT DO UPDATE on an epoch's row."""
    dialect = sqlite if dialect_name == "sqlite" else postgresql
    statement = dialect.insert(TrialEpoch)
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["trial_id", "epoch"],
        set_={name: statement.excluded[name] for name in _EPOCH_COLUMNS},
    )
    return upsert


@functools.cache
def _epochs_run_raised(dialect_name: str) -> Executable:
    """A running trial's epoch count raised to :epoch (never lowered) and its heartbeat; its
    id returned (none: it no longer runs)."""
    greatest = func.max if dialect_name == "sqlite" else func.greatest
    return (
        update(Trial)
        .where(Trial.id == bindparam("trial_id"), Trial.state == TrialState.RUNNING)
        .values(
            epochs_run=greatest(Trial.epochs_run, bindparam("epoch", type_=Integer)),
            heartbeat_at=bindparam("now"),
        )
        .returning(Trial.id)
    )

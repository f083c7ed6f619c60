"""Writing a trial's life into the database: start, its epochs as they end, the result.

Each write is its own short transaction. Epochs are written as they end, but at most once per
`epoch_flush_s` (1 s) from the trial's start: whatever ended since the last write, in one
upsert. The dashboard sees a running trial's curve grow with at most that delay (its trial page
polls every 2.5 s), and a trial pays one round trip per second for its curve instead of one per
epoch (each epoch's write was most of the service's overhead per trial); a trial shorter than
that writes its curve with its result. A crash loses at most the epochs not yet written; a
retry resumes from the resume checkpoint and writes them again. The study's best trial and
status are brought up to date in the same transaction as the result that changes them, and so
is Optuna's record of the trial where the worker keeps the study in memory (`OptunaMirror`):
the trial's end is in both or in neither, whatever stops the worker.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
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
from service.db.models import Study, StudyStatus, Trial, TrialEpoch, TrialState, utcnow
from service.queue.claim import Claim, set_worker_trial
from service.queue.reaper import hand_over
from service.queue.release import release_claims
from service.queue.study_status import PROGRESS_COLUMNS, StudyProgress, finish_if_done
from service.worker.db_retry import retried, with_db_retry
from trainer import EpochRecord, TrialResult

logger = logging.getLogger(__name__)


OptunaTrial = int | Callable[[Connection], int]
"""A trial's Optuna number, or the write that records its end in Optuna's tables (on the
result's own connection, in its transaction) and returns its number."""


class _TrialHandedOverError(Exception):
    """The trial no longer runs (the reaper handed it over): roll back what was written."""


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _labels(result: TrialResult) -> str | None:
    """`,a,b,` for the trial list's problem filter (None: no problem)."""
    labels = [problem.label for problem in result.problems]
    return f",{','.join(labels)}," if labels else None


def _finite_list(values: Sequence[float | None] | None) -> list[float | None] | None:
    """JSON has no NaN or infinity: those become null."""
    return None if values is None else [_finite(value) for value in values]


def _optuna_number(connection: Connection, optuna_trial: OptunaTrial) -> int:
    return optuna_trial if isinstance(optuna_trial, int) else optuna_trial(connection)


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
        self._last_flush = time.monotonic()
        self.next_claim: Claim | None = None
        """The claim `finished` made in its transaction (see there)."""

    @retried("record the trial start")
    def started(
        self, optuna_trial_id: int | None, params: dict[str, Any], device: str, resume_file: str
    ) -> None:
        """`resume_file`: where the trial's resume checkpoint will be, so a retry finds it
        even when this worker dies before the trial ends. `optuna_trial_id` (the Optuna trial's
        number) is None for a mirrored study's trial, which Optuna's storage gets at its end."""
        with transaction(self.factory) as session:  # (the claim marked the worker busy)
            session.connection().execute(
                _TRIAL_UPDATE,
                {
                    "trial_id": self.trial_id,
                    "optuna_trial_id": optuna_trial_id,
                    "params": params,
                    "device": device,
                    "last_checkpoint_path": resume_file,
                },
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
            connection = session.connection()
            _upsert_epochs(connection, self.trial_id, self._pending)
            connection.execute(
                _epochs_run_raised(connection.dialect.name),
                {"trial_id": self.trial_id, "epoch": self._pending[-1].epoch, "now": utcnow()},
            )
        self._written.update(record.epoch for record in self._pending)
        self._pending = []
        self._last_flush = time.monotonic()

    @retried("record the result")
    def finished(
        self,
        result: TrialResult,
        state: TrialState,
        optuna_trial: OptunaTrial,
        claim_next: Callable[[Session], Claim | None] | None = None,
    ) -> int | None:
        """Record the trial's end; its Optuna number, or None if its result was dropped.

        `claim_next`: the worker's next claim, made in the same transaction after the study's
        bookkeeping (so a study this result completes is not claimed again); what it got is
        in `next_claim` once the transaction has committed."""
        value = _finite(result.objective_value) if state == TrialState.COMPLETE else None
        diagnosis = result.diagnosis
        self.next_claim = None
        try:
            with transaction(self.factory) as session:
                connection = session.connection()
                number = _optuna_number(connection, optuna_trial)
                study_id = connection.execute(
                    _RUNNING_TRIAL_ENDED,
                    {
                        "trial_id": self.trial_id,
                        "optuna_trial_id": number,
                        "resumed_from_epoch": result.resumed_from_epoch,
                        "state": state,
                        "value": value,
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
                        "finished_at": utcnow(),
                    },
                ).scalar_one_or_none()
                if study_id is None:
                    raise _TrialHandedOverError
                # the epochs not written yet, a resumed trial's first ones (from its checkpoint)
                _upsert_epochs(connection, self.trial_id, self._unwritten(result.history))
                _update_study(connection, study_id, self.trial_id, value)
                # Locks: the trial's row first (as the heartbeat and the reaper take it
                # first too), the study's, then a claim's (other studies' without waiting,
                # the new trial's) and this worker's, which only this worker's own
                # transactions and a reaper that already holds the trial's row take.
                claimed = None if claim_next is None else claim_next(session)
                if claimed is None:
                    set_worker_trial(connection, self.worker_id, None)
        except _TrialHandedOverError:
            self._drop()
            return None
        self.next_claim = claimed
        return number

    @retried("hand the trial over")
    def handed_over(
        self, result: TrialResult, reason: str, max_retries: int, optuna_trial: OptunaTrial
    ) -> int | None:
        """The worker stops (SIGTERM): fail this trial and queue a retry resuming from its
        last checkpoint, for whichever worker comes next."""
        try:
            with transaction(self.factory) as session:
                number = _optuna_number(session.connection(), optuna_trial)
                trial = self._still_ours(session)
                _upsert_epochs(session.connection(), self.trial_id, self._unwritten(result.history))
                trial.optuna_trial_id = number
                trial.epochs_run = result.epochs_run
                trial.last_checkpoint_path = result.last_checkpoint
                trial.duration_s = result.wall_time_s
                hand_over(session, trial, reason, max_retries)
                self._ended(session, trial)
        except _TrialHandedOverError:
            self._drop()
            return None
        return number

    @retried("record the failure")
    def failed(self, reason: str, optuna_trial: OptunaTrial | None = None) -> int | None:
        try:
            with transaction(self.factory) as session:
                number = (
                    None
                    if optuna_trial is None
                    else _optuna_number(session.connection(), optuna_trial)
                )
                trial = self._still_ours(session)
                # its curve up to the failure
                _upsert_epochs(session.connection(), self.trial_id, self._pending)
                if number is not None:
                    trial.optuna_trial_id = number
                trial.state = TrialState.FAILED
                trial.error = reason
                trial.finished_at = utcnow()
                self._ended(session, trial)
        except _TrialHandedOverError:
            self._drop()
            return None
        return number

    def _still_ours(self, session: Session) -> Trial:
        """The trial, locked, if it still runs; else `_TrialHandedOverError`."""
        trial = session.get_one(Trial, self.trial_id, with_for_update=True)
        if trial.state != TrialState.RUNNING:
            raise _TrialHandedOverError
        return trial

    def _ended(self, session: Session, trial: Trial) -> None:
        """After the trial's row: the study's, then the worker's, as `finished` locks them
        (`hand_over` has locked the study already)."""
        session.flush()
        _update_study(session.connection(), trial.study_id, trial.id, None)
        set_worker_trial(session.connection(), self.worker_id, None)

    def _drop(self) -> None:
        """The trial no longer runs: the reaper handed it over while this worker was silent
        past the grace period (a network split, a stopped process), and its retry owns the
        result now, so this one is dropped, not written over the retry's bookkeeping (or this
        is the retry of a write that committed but whose answer was lost). The worker is
        released, and so is a claim that such a lost write made (it holds no other trial)."""
        with transaction(self.factory) as session:
            trial = session.get_one(Trial, self.trial_id)
            logger.warning(
                "trial %s no longer runs (%s: %s); this worker's result is not written",
                self.trial_id,
                trial.state,
                trial.error or "no error",
            )
            release_claims(session, self.worker_id)
            set_worker_trial(session.connection(), self.worker_id, None)

    def _unwritten(self, history: Sequence[EpochRecord]) -> list[EpochRecord]:
        return [record for record in history if record.epoch not in self._written]


def fail_study(
    factory: sessionmaker[Session], study_id: int, reason: str, patience_s: float = 300.0
) -> None:
    """A study that cannot run at all (bad spec for this sampler, missing data set...)."""
    with_db_retry(
        lambda: _fail_study(factory, study_id, reason), "fail the study", patience_s=patience_s
    )


def _fail_study(factory: sessionmaker[Session], study_id: int, reason: str) -> None:
    with transaction(factory) as session:
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


# The recorder's statements are Core statements built once per process, values bound at
# execution: ORM-enabled DML through the session, and compiling a multi-row INSERT anew for
# each flush, cost more Python time per trial than running the statements (bench/README.md).

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


def _upsert_epochs(connection: Connection, trial_id: int, records: Sequence[EpochRecord]) -> None:
    """Insert or overwrite the epochs' rows in one batch (a retry or a resumed trial writes
    some epochs again)."""
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
            "mae": _finite(record.mae),
            "val_mae": _finite(record.val_mae),
            "data_loss": _finite(record.data_loss),
            "val_data_loss": _finite(record.val_data_loss),
            "kernel_grad_norms": _finite_list(record.kernel_grad_norms),
            "bias_grad_norms": _finite_list(record.bias_grad_norms),
            "dead_units": _finite(record.dead_units),
        }
        for record in records
    ]
    connection.execute(_epoch_upsert(connection.dialect.name), rows)


@functools.cache
def _epoch_upsert(dialect_name: str) -> Executable:
    """PostgreSQL's and SQLite's INSERT ... ON CONFLICT DO UPDATE on an epoch's row."""
    dialect = sqlite if dialect_name == "sqlite" else postgresql
    statement = dialect.insert(TrialEpoch)
    values = (
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
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["trial_id", "epoch"],
        set_={name: statement.excluded[name] for name in values},
    )
    return upsert


@functools.cache
def _epochs_run_raised(dialect_name: str) -> Executable:
    """A running trial's epoch count raised to :epoch (never lowered) and its heartbeat."""
    greatest = func.max if dialect_name == "sqlite" else func.greatest
    return (
        update(Trial)
        .where(Trial.id == bindparam("trial_id"))
        .values(
            epochs_run=greatest(Trial.epochs_run, bindparam("epoch", type_=Integer)),
            heartbeat_at=bindparam("now"),
        )
    )


def _metrics(result: TrialResult) -> dict[str, Any]:
    metrics: dict[str, Any] = {k: _finite(v) for k, v in result.split_metrics().items()}
    if result.folds is not None:
        metrics["cv_mean"] = _finite(result.folds.mean)
        metrics["cv_std"] = _finite(result.folds.std)
    return metrics


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _finite(v) if isinstance(v, float) else v for k, v in values.items()}

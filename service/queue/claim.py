"""Claiming work: one trial slot of a study, atomically, whatever the number of workers.

A worker takes a slot of the highest-priority, oldest study that is queued or running, not
cancelled, within its time budget, with fewer trials than `n_trials` and fewer running than
`max_parallel_trials`. Reading those counts and inserting the new trial happen in one
transaction that holds the study row: `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL (a
second worker skips a study being claimed instead of waiting), and on SQLite a transaction begun
with BEGIN IMMEDIATE (writers queue up on SQLite's single write lock, see `create_db_engine`).
So a study never gets more than `n_trials` trials, counted across all workers. A study with
`confirm` in its spec gets the configuration of each of its last `top * seeds` slots chosen
here too, under the same lock (`service.queue.confirmation`).
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    bindparam,
    case,
    func,
    insert,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased, sessionmaker

from service.db.engine import transaction
from service.db.models import Study, StudyStatus, Trial, TrialState, Worker, utcnow
from service.db.repositories import problem_pattern
from service.queue.confirmation import Choice, ConfirmPlan, Draw, confirmation_choice
from service.queue.work_queue import Claim
from service.states import ENDED_TRIAL_STATES

__all__ = ["Claim", "claim_in", "claim_more", "claim_trial", "live_workers", "work_remains"]


# Statements here are built once per process (`functools.cache`, values as bound parameters):
# building them cost more Python time per claim than running them (bench/README.md).


def retries(study_id: Any) -> Any:
    """How many of the study's trials are retries (each takes the slot of the trial it
    retries; an index holds only these rows)."""
    return (
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == study_id, Trial.retry_of_id.is_not(None))
        .scalar_subquery()
    )


def slots_taken(study_id: Any) -> Any:
    """Trials holding one of the study's `n_trials` slots: every trial of it (all states
    count), less the retried ones, whose retries hold their slots. A trial is retried at
    most once (only a running trial is handed over), so that is its trials less its retries,
    from two index scans (an anti-join over all of its trials cost 9 ms per claim at 10,000)."""
    every = select(func.count()).select_from(Trial).where(Trial.study_id == study_id)
    return every.scalar_subquery() - retries(study_id)


def running_count(study_id: Any) -> Any:
    return (
        select(func.count(Trial.id))
        .where(Trial.study_id == study_id, Trial.state == TrialState.RUNNING)
        .scalar_subquery()
    )


def claim_trial(factory: sessionmaker[Session], worker_id: int) -> Claim | None:
    """Reserve the next trial slot for `worker_id`, or None when there is no work."""
    with transaction(factory) as session:
        return claim_in(session, worker_id)


def claim_in(session: Session, worker_id: int) -> Claim | None:
    """`claim_trial` in the session's transaction (a worker claims its next trial in the
    transaction that records its last one's result: one commit fewer per trial)."""
    for row in session.connection().execute(_candidates()).all():
        candidate = _Candidate(*row)
        if _past_timeout(candidate):
            continue
        claim = _reserve(session, candidate, worker_id)
        if claim is not None:
            return claim
    return None


def claim_more(factory: sessionmaker[Session], worker_id: int, study_id: int) -> Claim | None:
    """Another trial slot of `study_id` for a worker that holds one already (a pack of
    trials, `trainer.packing`); None when the study has no slot free (`n_trials`,
    `max_parallel_trials`), is over, or another claim holds it this moment."""
    with transaction(factory) as session:
        row = (
            session.connection()
            .execute(_candidates(one_study=True), {"study_id": study_id})
            .first()
        )
        if row is None or _past_timeout(candidate := _Candidate(*row)):
            return None
        return _reserve(session, candidate, worker_id)


def live_workers(factory: sessionmaker[Session], grace_s: float) -> int:
    """Workers registered and heard from within `grace_s` (idle or busy)."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    with factory() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(Worker)
                .where(Worker.status.in_(("idle", "busy")), Worker.heartbeat_at >= cutoff)
            ).scalar_one()
        )


def work_remains(factory: sessionmaker[Session]) -> bool:
    """Whether some study has a free slot, locked or not: a claim that found none may only
    have skipped studies that other workers were claiming from at that moment (PostgreSQL's
    SKIP LOCKED), so a worker that stops when idle asks this before it stops."""
    with factory() as session:
        rows = session.connection().execute(_candidates(locked=False)).all()
        return any(not _past_timeout(_Candidate(*row)) for row in rows)


class _Candidate(NamedTuple):
    """A study with a free slot, as the candidates' query reads it (`_CANDIDATE_COLUMNS`)."""

    id: int
    status: str
    started_at: datetime | None
    timeout_s: float | None
    n_trials: int
    max_parallel_trials: int
    optuna_study_name: str
    spec: dict[str, Any]
    direction: str


_CANDIDATE_COLUMNS = (
    Study.id,
    Study.status,
    Study.started_at,
    Study.timeout_s,
    Study.n_trials,
    Study.max_parallel_trials,
    Study.optuna_study_name,
    Study.spec,
    Study.direction,
)


@functools.cache
def _candidates(locked: bool = True, one_study: bool = False) -> Select[*tuple[Any, ...]]:
    """The studies with a free slot, best first, locked (skipping those locked by another
    claim) unless `locked` is False; a few of them, so that one past its time budget does not
    hide the next (`one_study`: only the study bound as `study_id`). Plain columns, not ORM
    objects: loading a Study entity per candidate cost about as much Python time as the rest
    of the claim."""
    statement = (
        select(*_CANDIDATE_COLUMNS)
        .where(
            Study.status.in_((StudyStatus.QUEUED, StudyStatus.RUNNING)),
            Study.cancel_requested.is_(False),
            or_(slots_taken(Study.id) < Study.n_trials, waiting_exists(Study.id)),
            running_count(Study.id) < Study.max_parallel_trials,
        )
        .order_by(Study.priority.desc(), Study.created_at, Study.id)
        .limit(8)
    )
    if one_study:
        statement = statement.where(Study.id == bindparam("study_id", type_=Integer))
    return statement.with_for_update(skip_locked=True, of=Study) if locked else statement


def waiting_exists(study_id: Any) -> Any:
    return (
        select(Trial.id)
        .where(Trial.study_id == study_id, Trial.state == TrialState.WAITING)
        .exists()
    )


def retry_chain(session: Session, trial: Trial) -> list[Trial]:
    """`trial`, the trial it retries, and so on back to the first attempt (the last item).
    The one walk of a chain: the claim seeds a retry like its first attempt, the reaper counts
    the retries before a trial it hands over."""
    chain = [trial]
    while chain[-1].retry_of_id is not None:
        chain.append(session.get_one(Trial, chain[-1].retry_of_id))
    return chain


def _past_timeout(study: _Candidate) -> bool:
    return past_time_budget(study.timeout_s, study.started_at, utcnow())


def past_time_budget(timeout_s: float | None, started_at: datetime | None, now: datetime) -> bool:
    """Whether a study with this time budget, started then, has run out of it by `now`."""
    return (
        timeout_s is not None
        and started_at is not None
        and now - started_at > timedelta(seconds=timeout_s)
    )


@functools.cache
def _slot_facts(one_at_a_time: bool) -> Select[int | None, int, int | None, int, int]:
    """What a slot needs to know about its study's trials, in one round trip, read under
    the study's lock: the oldest waiting retry, the next free number, (one trial at a time)
    how many have ended, and the slots taken and trials running.

    The last two were checked by the candidates' query already, but as of that statement's
    start: PostgreSQL locks each candidate row only when it reaches it, so a claim that
    committed in between (its lock released, the study's row unchanged) is missing from those
    counts, which could put a study one trial over `n_trials` or `max_parallel_trials`. This
    statement's snapshot is taken after the lock (READ COMMITTED: one per statement)."""
    study_id = bindparam("study_id", type_=Integer)
    of_study = Trial.study_id == study_id
    return select(
        select(Trial.id)
        .where(of_study, Trial.state == TrialState.WAITING)
        .order_by(Trial.number)
        .limit(1)
        .scalar_subquery(),
        select(func.coalesce(func.max(Trial.number), -1) + 1).where(of_study).scalar_subquery(),
        select(func.count())
        .select_from(Trial)
        .where(of_study, Trial.state.in_(ENDED_TRIAL_STATES))
        .scalar_subquery()
        if one_at_a_time
        else null(),
        slots_taken(study_id),
        running_count(study_id),
    )


_STUDY_STARTED = (
    update(Study)
    .where(Study.id == bindparam("study_id"))
    .values(status=StudyStatus.RUNNING, started_at=bindparam("now"))
)

_TRIAL_CLAIMED = insert(Trial).returning(Trial.id)
"""A new trial's row (columns from the execution's parameters, defaults for the rest)."""

_WORKER_STATUS = update(Worker).where(Worker.id == bindparam("worker_id"))


def set_worker_trial(connection: Connection, worker_id: int, trial_id: int | None) -> None:
    """The worker is busy with `trial_id`, or idle (None)."""
    connection.execute(
        _WORKER_STATUS,
        {
            "worker_id": worker_id,
            "current_trial_id": trial_id,
            "status": "idle" if trial_id is None else "busy",
        },
    )


def _reserve(session: Session, study: _Candidate, worker_id: int) -> Claim | None:
    """A slot of `study` (a candidate row, locked), or None if it has none free after all."""
    now = utcnow()
    waiting_id, number, ended, taken, running = (
        session.connection()
        .execute(_slot_facts(one_at_a_time=study.max_parallel_trials == 1), {"study_id": study.id})
        .one()
    )
    if running >= study.max_parallel_trials or (waiting_id is None and taken >= study.n_trials):
        return None
    if study.status == StudyStatus.QUEUED:
        session.connection().execute(_STUDY_STARTED, {"study_id": study.id, "now": now})
    waiting = None if waiting_id is None else session.get_one(Trial, waiting_id)
    if waiting is not None:  # a retry (or a claim given back) first: it holds a slot already
        waiting.state = TrialState.RUNNING
        waiting.worker_id = worker_id
        waiting.started_at = now
        waiting.heartbeat_at = now
        session.flush()
        set_worker_trial(session.connection(), worker_id, waiting.id)
        fixed = waiting.retry_of_id is not None or waiting.confirmation
        return Claim(
            study_id=study.id,
            trial_id=waiting.id,
            number=waiting.number,
            optuna_study_name=study.optuna_study_name,
            spec=study.spec,
            direction=study.direction,
            retry_of_id=waiting.retry_of_id,
            params=dict(waiting.params) if fixed else None,
            resume_from=waiting.last_checkpoint_path,
            seed_number=retry_chain(session, waiting)[-1].number,
            confirmation=waiting.confirmation,
            ended=ended,
        )
    choice = _confirmation_choice(session, study, taken)
    if choice == "wait":
        return None  # a searched trial still runs: its result may change what to confirm
    confirms = None if choice == "search" else choice
    row = {
        "study_id": study.id,
        "number": number,
        "state": TrialState.RUNNING,
        "worker_id": worker_id,
        "started_at": now,
        "heartbeat_at": now,
    }
    if confirms is not None:
        row |= {"params": confirms, "confirmation": True}
    trial_id = session.connection().execute(_TRIAL_CLAIMED, row).scalar_one()
    # The study's row, then the trial's, then the worker's. A trial's end locks its trial's
    # row, then its study's, then (with the claim it makes) this worker's: no cycle, as the
    # trials differ and a claim never waits on a study (SKIP LOCKED).
    set_worker_trial(session.connection(), worker_id, trial_id)
    return Claim(
        study_id=study.id,
        trial_id=trial_id,
        number=number,
        optuna_study_name=study.optuna_study_name,
        spec=study.spec,
        direction=study.direction,
        params=confirms,
        confirmation=confirms is not None,
        ended=ended,
    )


def _confirmation_choice(session: Session, study: _Candidate, taken: int) -> Choice:
    """What the study's next slot (`taken` are held) does: a searched slot is "search"; one of
    a confirming study's last slots retrains a configuration or waits (`Choice`)."""
    plan = ConfirmPlan.of(study.spec)
    if plan is None or not plan.is_confirmation_slot(taken, study.n_trials):
        return "search"
    rows = session.connection().execute(_draws(), {"study_id": study.id}).all()
    return confirmation_choice((Draw(*row) for row in rows), plan.top, study.direction)


@functools.cache
def _draws() -> Select[Any, str, float | None, bool, bool, bool]:
    """The study's trials that a confirmation's choice reads: the finished ones, the running
    ones and the confirmations, each with whether a retry holds its slot and whether it
    diverged."""
    study_id = bindparam("study_id", type_=Integer)
    retry = aliased(Trial)
    retried = select(retry.id).where(retry.retry_of_id == Trial.id).exists()
    diverged = case((Trial.problem_labels.like(problem_pattern("diverged")), True), else_=False)
    return (
        select(Trial.params, Trial.state, Trial.value, Trial.confirmation, retried, diverged)
        .where(
            Trial.study_id == study_id,
            or_(
                Trial.state.in_((TrialState.COMPLETE, TrialState.RUNNING)),
                Trial.confirmation.is_(True),
            ),
        )
        .order_by(Trial.number)
    )

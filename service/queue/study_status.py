"""When a study is over: its budget spent, its cancel taken effect, or its time run out."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Integer, Select, bindparam, func, select, update
from sqlalchemy.orm import Session

from service.db.models import Study, StudyStatus, Trial, utcnow
from service.queue.claim import past_time_budget, retries, running_count
from service.states import ACTIVE_STUDY_STATUSES, ENDED_TRIAL_STATES


@dataclass(frozen=True)
class StudyProgress:
    """What decides whether a study is over, besides its trials."""

    status: str
    cancel_requested: bool
    n_trials: int
    timeout_s: float | None
    started_at: datetime | None


PROGRESS_COLUMNS = (
    Study.status,
    Study.cancel_requested,
    Study.n_trials,
    Study.timeout_s,
    Study.started_at,
)


def study_outcome(
    study: StudyProgress, running: int, finished: int, now: datetime
) -> tuple[str, str | None] | None:
    """The status a study ends with and a note on why (or None for no note), or None while
    it goes on: completed when n_trials trials finished, cancelled once a cancel took effect,
    completed (with a note) when the time budget ran out; only when no trial runs any more."""
    if study.status not in ACTIVE_STUDY_STATUSES or running:
        return None
    if study.cancel_requested:
        return StudyStatus.CANCELLED, None
    if finished >= study.n_trials:
        return StudyStatus.COMPLETED, None
    if past_time_budget(study.timeout_s, study.started_at, now):
        note = f"time budget of {study.timeout_s:g} s ran out after {finished} trials"
        return StudyStatus.COMPLETED, note
    return None


def finish_study_if_done(session: Session, study: Study) -> None:
    """End `study` (a loaded, locked row) if it is over (see `study_outcome`): the session's
    pending changes flushed, then `finish_if_done`'s statements, and the row's ending columns
    read again on next access."""
    if study.status not in ACTIVE_STUDY_STATUSES:
        return
    session.flush()
    progress = StudyProgress(
        study.status, study.cancel_requested, study.n_trials, study.timeout_s, study.started_at
    )
    finish_if_done(session.connection(), study.id, progress)
    session.expire(study, ["status", "error", "finished_at"])


def finish_if_done(connection: Connection, study_id: int, progress: StudyProgress) -> None:
    """End a study the caller has locked and read `progress` of (`PROGRESS_COLUMNS`) if it
    is over: the one place a study's end is decided and written (Core statements, as the
    worker's hot path wants; `finish_study_if_done` wraps it for an ORM session)."""
    if progress.status not in ACTIVE_STUDY_STATUSES:
        return
    running, finished = connection.execute(_trial_counts(), {"study_id": study_id}).one()
    now = utcnow()
    outcome = study_outcome(progress, running, finished, now)
    if outcome is None:
        return
    status, note = outcome
    values = {"status": status, "finished_at": now, **({} if note is None else {"error": note})}
    connection.execute(update(Study).where(Study.id == study_id).values(values))


@functools.cache
def _trial_counts() -> Select[int, int]:
    """A study's running trials, and its finished ones that hold a slot: those less the
    retried ones (each retried trial failed, and its retry holds its slot; see
    `service.queue.claim.slots_taken`). Built once: see `service.queue.claim`."""
    study_id = bindparam("study_id", type_=Integer)
    ended = (
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == study_id, Trial.state.in_(ENDED_TRIAL_STATES))
        .scalar_subquery()
    )
    return select(running_count(study_id), ended - retries(study_id))

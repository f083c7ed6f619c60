"""When a study is over: its budget spent, its cancel taken effect, or its time run out."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, Select, bindparam, func, select, update
from sqlalchemy.orm import Session

from service.db.models import Study, StudyStatus, Trial, utcnow
from service.queue.claim import past_time_budget, retries, running_count
from service.states import ACTIVE_STUDY_STATUSES, ENDED_TRIAL_STATES, SUCCEEDED_TRIAL_STATES


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
    study: StudyProgress,
    running: int,
    finished: int,
    now: datetime,
    succeeded: int | None = None,
) -> tuple[str, str | None] | None:
    """The status a study ends with and a note on why (or None for no note), or None while
    it goes on: completed when n_trials trials finished, cancelled once a cancel took effect,
    completed (with a note) when the time budget ran out; only when no trial runs any more.
    A study that ends with trials run but none of them complete or pruned (`succeeded`, when
    known, is 0) failed: a leaderboard of errors is not a result."""
    if study.status not in ACTIVE_STUDY_STATUSES or running:
        return None
    if study.cancel_requested:
        return StudyStatus.CANCELLED, None
    outcome: tuple[str, str | None] | None = None
    if finished >= study.n_trials:
        outcome = StudyStatus.COMPLETED, None
    elif past_time_budget(study.timeout_s, study.started_at, now):
        note = f"time budget of {study.timeout_s:g} s ran out after {finished} trials"
        outcome = StudyStatus.COMPLETED, note
    if outcome is not None and succeeded == 0 and finished > 0:
        why = f"none of its {finished} trials completed: each failed (its error says why)"
        return StudyStatus.FAILED, why if outcome[1] is None else f"{outcome[1]}; {why}"
    return outcome


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
    counts = connection.execute(_trial_counts(), {"study_id": study_id}).one()
    running, finished, succeeded = counts
    now = utcnow()
    outcome = study_outcome(progress, running, finished, now, succeeded)
    if outcome is None:
        return
    status, note = outcome
    values = {"status": status, "finished_at": now, **({} if note is None else {"error": note})}
    connection.execute(update(Study).where(Study.id == study_id).values(values))


@functools.cache
def _trial_counts() -> Select[int, int, int]:
    """A study's running trials; its finished ones that hold a slot: those less the retried
    ones (each retried trial failed, and its retry holds its slot; see
    `service.queue.claim.slots_taken`); and those that succeeded (complete or pruned).
    Built once: see `service.queue.claim`."""
    study_id = bindparam("study_id", type_=Integer)

    def count(states: tuple[str, ...]) -> Any:
        return (
            select(func.count())
            .select_from(Trial)
            .where(Trial.study_id == study_id, Trial.state.in_(states))
            .scalar_subquery()
        )

    return select(
        running_count(study_id),
        count(ENDED_TRIAL_STATES) - retries(study_id),
        count(SUCCEEDED_TRIAL_STATES),
    )

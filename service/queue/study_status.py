"""When a study is over: its budget spent, its cancel taken effect, or its time run out."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import Study, StudyStatus, Trial, TrialState, utcnow
from service.queue.claim import not_retried, running_count

_FINAL_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED)


def finish_study_if_done(session: Session, study: Study) -> None:
    """Completed when n_trials trials finished, cancelled once a cancel took effect, completed
    (with a note) when the time budget ran out; only when no trial is running any more."""
    if study.status not in (StudyStatus.QUEUED, StudyStatus.RUNNING):
        return
    finished_count = (
        select(func.count(Trial.id))
        .where(Trial.study_id == study.id, Trial.state.in_(_FINAL_STATES), not_retried())
        .scalar_subquery()
    )
    running, finished = session.execute(select(running_count(study.id), finished_count)).one()
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

"""Lost and stopped trials: mark them failed and queue a retry that resumes from a checkpoint.

A trial whose heartbeat is older than the grace period belongs to a worker that died (SIGKILL,
a lost machine). Optuna's own heartbeat only works inside `study.optimize()` (optuna#3293) and
the workers use ask/tell, so this module does it: the trial becomes `failed` ("worker lost"),
the worker that reaped it tells its Optuna trial FAIL, and a `waiting` retry with the same
parameters and a link to the original is queued. The retry takes the original's slot (see
`claim.slots_taken`) and resumes from the original's last checkpoint. A worker stopped by
SIGTERM hands its trial over the same way, at once. After `max_retries` retries of one trial
the chain ends failed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import transaction
from service.db.models import Study, StudyStatus, Trial, TrialState, Worker, utcnow
from service.queue.claim import past_time_budget, retry_chain
from service.queue.study_status import finish_study_if_done
from service.queue.work_queue import LostTrial
from service.states import ACTIVE_STUDY_STATUSES

logger = logging.getLogger(__name__)


def retries_before(session: Session, trial: Trial) -> int:
    """How many retries precede `trial` in its chain."""
    return len(retry_chain(session, trial)) - 1


def hand_over(session: Session, trial: Trial, reason: str, max_retries: int) -> Trial | None:
    """Fail `trial` and queue its retry (None when the chain has used its retries)."""
    trial.state = TrialState.FAILED
    trial.error = reason
    trial.finished_at = utcnow()
    # The study's row locked, as a claim locks it, before the retry takes the next number: a
    # trial claimed meanwhile would otherwise get the same one.
    study = session.get_one(Study, trial.study_id, with_for_update=True)
    if retries_before(session, trial) >= max_retries or study.status not in ACTIVE_STUDY_STATUSES:
        return None
    latest = select(func.max(Trial.number)).where(Trial.study_id == study.id)
    number = session.execute(latest).scalar_one() + 1  # the study has `trial`, at least
    retry = Trial(
        study_id=study.id,
        number=number,
        state=TrialState.WAITING,
        params=dict(trial.params),
        retry_of_id=trial.id,
        confirmation=trial.confirmation,
        last_checkpoint_path=trial.last_checkpoint_path,
        started_at=utcnow(),
    )
    session.add(retry)
    session.flush()
    return retry


def reap_lost_trials(
    factory: sessionmaker[Session], grace_s: float, max_retries: int
) -> list[LostTrial]:
    """Hand over every running trial silent for longer than `grace_s`; returns them."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    lost: list[LostTrial] = []
    with transaction(factory) as session:
        trials = session.scalars(
            select(Trial)
            .where(Trial.state == TrialState.RUNNING, Trial.heartbeat_at < cutoff)
            .order_by(Trial.study_id, Trial.id)  # two reapers lock studies in one order
            .with_for_update(skip_locked=True)
        ).all()
        for trial in trials:
            # The study's row locked before its trials are counted: a worker recording another
            # trial's end locks it too, so one of the two counts after the other has committed
            # and the last one to end a trial of a cancelled or timed-out study ends the study.
            study = session.get_one(Study, trial.study_id, with_for_update=True)
            silent = (utcnow() - (trial.heartbeat_at or trial.started_at)).total_seconds()
            hand_over(session, trial, f"worker lost: no heartbeat for {silent:.0f} s", max_retries)
            finish_study_if_done(session, study)
            if trial.worker_id is not None and (worker := session.get(Worker, trial.worker_id)):
                worker.status = "lost"
                worker.current_trial_id = None
            lost.append(LostTrial(trial.id, study.optuna_study_name, trial.optuna_trial_id))
    for each in lost:
        logger.warning("trial %s: worker lost, retry queued", each.trial_id)
    return lost


def end_stalled_studies(factory: sessionmaker[Session]) -> None:
    """End the running studies that are over but that no trial's end will finish: cancelled,
    or past their time budget, with no trial running (a trial that ended just before the
    budget ran out, then claims that skip the study; only a waiting retry or a claim given
    back left). Those found over are locked as a claim locks them, skipping any another
    worker holds, and checked again."""
    with transaction(factory) as session:
        now = utcnow()
        over = [
            study_id
            for study_id, cancelled, timeout_s, started_at in session.execute(
                select(Study.id, Study.cancel_requested, Study.timeout_s, Study.started_at).where(
                    Study.status == StudyStatus.RUNNING,
                    or_(Study.cancel_requested.is_(True), Study.timeout_s.is_not(None)),
                )
            )
            if cancelled or past_time_budget(timeout_s, started_at, now)
        ]
        if not over:
            return
        for study in session.scalars(
            select(Study)
            .where(Study.id.in_(over))
            .order_by(Study.id)
            .with_for_update(skip_locked=True)
        ):
            finish_study_if_done(session, study)

"""Cancel, extend and delete studies; each is race-free against a worker claiming the study."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.artifacts import ArtifactStoreError, artifact_store, study_checkpoints_prefix
from service.config import Settings
from service.db.models import Study, StudyStatus, utcnow
from service.db.repositories import StudyRepository
from service.queue.claim import slots_taken
from service.queue.study_status import finish_study_if_done
from service.studies._optuna import delete_optuna_study
from service.studies.browse import find_study
from service.studies.errors import ConflictError, InvalidInputError, Issue, NotFoundError
from service.studies.schemas import StudyRead
from service.studies.tokens import SERVER, Principal, check_may_change, quota_issues

logger = logging.getLogger(__name__)


def cancel_study(session: Session, study_id: int, principal: Principal = SERVER) -> StudyRead:
    """queued -> cancelled at once; running -> `cancel_requested` (the worker starts no more
    trials and finishes the study), or cancelled at once when none of its trials runs (only
    waiting ones: no trial's end would come to finish it); a finished study ->
    `ConflictError`."""
    with session.begin():
        check_may_change(principal, find_study(session, study_id))
        studies = StudyRepository(session)
        now = utcnow()
        cancelled = studies.cancel_if_queued(study_id, now)
        requested = not cancelled and studies.request_cancel_if_running(study_id, now)
        study = find_study(session, study_id)  # (the update above holds its row's lock)
        if not (cancelled or requested):
            raise ConflictError(
                f"study {study_id} is already {study.status}; "
                "only a queued or running study can be cancelled"
            )
        if requested:
            finish_study_if_done(session, study)
        return StudyRead.model_validate(study)


def extend_study(
    session: Session,
    settings: Settings,
    study_id: int,
    n_trials: int,
    principal: Principal = SERVER,
) -> StudyRead:
    """Give a study `n_trials` more trials. A queued or running one gets them on top of its
    budget; a completed one is queued again with budget = the trials it has + `n_trials`, and
    its next claim starts its time budget afresh. Its Optuna study (and so the sampler's
    state: every finished trial) stays as it is. A failed or cancelled study, or one whose
    cancel is pending, is a `ConflictError`; a budget over the server's limit is refused."""
    with session.begin():
        # The study's row first, locked, as a claim and a trial's end take it.
        study = session.scalars(
            select(Study).where(Study.id == study_id).with_for_update()
        ).one_or_none()
        if study is None:
            raise NotFoundError(f"no study has id {study_id}")
        check_may_change(principal, study)
        over_quota = quota_issues(session, principal, study.priority, n_trials)
        if over_quota:
            raise InvalidInputError(
                [Issue(("n_trials",), issue.reason, issue.type) for issue in over_quota]
            )
        active = study.status in (StudyStatus.QUEUED, StudyStatus.RUNNING)
        if study.cancel_requested or not (active or study.status == StudyStatus.COMPLETED):
            state = "being cancelled" if study.cancel_requested else study.status
            raise ConflictError(
                f"study {study_id} is {state}; only a queued, running or completed study "
                "can be extended"
            )
        taken = int(session.scalar(select(slots_taken(study.id))) or 0)
        budget = study.n_trials + n_trials if active else taken + n_trials
        if budget > settings.max_trials_per_study:
            raise InvalidInputError(
                [
                    Issue(
                        ("n_trials",),
                        f"this server allows at most {settings.max_trials_per_study} trials "
                        f"per study; study {study_id} would have {budget}",
                        "less_than_equal",
                    )
                ]
            )
        now = utcnow()
        study.n_trials = budget
        study.updated_at = now
        if not active:
            study.status = StudyStatus.QUEUED
            study.finished_at = None
            study.error = None
        session.flush()
        logger.info("study %d extended by %d trials to %d", study_id, n_trials, budget)
        return StudyRead.model_validate(study)


def delete_study(
    session: Session, settings: Settings, study_id: int, principal: Principal = SERVER
) -> None:
    """Delete a study that is not running: its row, trials and epochs (one transaction), then
    its Optuna study and its checkpoint directory."""
    with session.begin():
        study = find_study(session, study_id)
        check_may_change(principal, study)
        optuna_name = study.optuna_study_name
        if not StudyRepository(session).delete_unless_running(study_id):
            raise ConflictError(
                f"study {study_id} is running; cancel it and wait until it stops before deleting"
            )
    # The study is gone for clients; leftovers below are logged, not reported as failures.
    try:
        delete_optuna_study(
            optuna_name, settings.effective_database_url, settings.db_prepared_statements
        )
    except Exception:
        logger.exception("study %d deleted, but not its Optuna study %r", study_id, optuna_name)
    store = artifact_store(settings)
    try:
        store.delete_prefix(study_checkpoints_prefix(study_id))
    except (OSError, ArtifactStoreError):
        logger.exception(
            "study %d deleted, but not its checkpoints in %s", study_id, store.describe()
        )

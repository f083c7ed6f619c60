"""Read studies: a page of them, or one with its trial counts and best trial."""

from __future__ import annotations

from typing import Literal, cast

from sqlalchemy.orm import Session

from service.db.models import Study, StudyStatus, Trial, TrialState
from service.db.repositories import StudyRepository, TrialRepository
from service.studies._reads import reading
from service.studies.errors import NotFoundError
from service.studies.schemas import Page, StudyDetail, StudyRead, TrialRead


def list_studies(
    session: Session, *, status: StudyStatus | None, limit: int, offset: int
) -> Page[StudyRead]:
    with reading(session):
        rows, total = StudyRepository(session).page(status=status, limit=limit, offset=offset)
        items = [StudyRead.model_validate(row) for row in rows]
    return Page[StudyRead](items=items, total=total, limit=limit, offset=offset)


def get_study(session: Session, study_id: int) -> StudyDetail:
    """One study with its trials counted by state (one GROUP BY) and its best trial."""
    with reading(session):
        study = find_study(session, study_id)
        trials = TrialRepository(session)
        counts = trials.count_by_state(study_id)
        best = _best_trial(trials, study)
        return StudyDetail.model_validate(
            {
                **StudyRead.model_validate(study).model_dump(),
                "spec": study.spec,
                "trial_counts": {state.value: 0 for state in TrialState} | counts,
                "best_trial": None if best is None else TrialRead.model_validate(best),
            }
        )


def find_study(session: Session, study_id: int) -> Study:
    """The study, or `NotFoundError`."""
    study = StudyRepository(session).find(study_id)
    if study is None:
        raise NotFoundError(f"no study has id {study_id}")
    return study


def _best_trial(trials: TrialRepository, study: Study) -> Trial | None:
    """The worker's record of the best trial, or the best complete trial by value."""
    if study.best_trial_id is not None:
        best = trials.find_listed(study.best_trial_id)
        if best is not None and best.study_id == study.id:
            return best
    direction = cast(Literal["minimize", "maximize"], study.direction)
    return trials.find_best(study.id, direction)

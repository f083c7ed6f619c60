"""Read studies: a page of them, or one with its trial counts and best trial."""

from __future__ import annotations

from typing import Literal, cast

from sqlalchemy.orm import Session

from service.db.models import Study, StudyStatus, TrialState
from service.db.repositories import StudyRepository, TrialRepository
from service.studies._reads import reading
from service.studies.advice import confirm_warnings, spec_warnings
from service.studies.confirmed import read_confirmed_best
from service.studies.errors import NotFoundError
from service.studies.schemas import Page, StudyDetail, StudyRead, TrialRead
from service.studies.settled_counts import is_settled, recall, remember


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
        found = StudyRepository(session).find_with_best_trial(study_id)
        if found is None:
            raise NotFoundError(f"no study has id {study_id}")
        study, best = found
        trials = TrialRepository(session)
        counts = _trial_counts(session, trials, study)
        if best is None:  # no best recorded (yet): the best complete trial by value
            direction = cast(Literal["minimize", "maximize"], study.direction)
            best = trials.find_best(study.id, direction)
        return StudyDetail.model_validate(
            {
                **StudyRead.model_validate(study).model_dump(),
                "spec": study.spec,
                "warnings": spec_warnings(
                    study.objective_metric, (study.spec or {}).get("search_space", {})
                )
                + confirm_warnings(study.spec or {}),
                "trial_counts": {state.value: 0 for state in TrialState} | counts,
                "best_trial": None if best is None else TrialRead.model_validate(best),
                "confirmed_best": read_confirmed_best(session, study),
            }
        )


def _trial_counts(session: Session, trials: TrialRepository, study: Study) -> dict[str, int]:
    """Trials by state: one GROUP BY, remembered for a study that has settled."""
    if not is_settled(study.status, study.finished_at):
        return trials.count_by_state(study.id)
    assert study.finished_at is not None
    remembered = recall(session, study.id)
    if remembered is not None and remembered[0] == study.finished_at:
        return remembered[1]
    counts = trials.count_by_state(study.id)
    remember(session, study.id, study.finished_at, counts)
    return counts


def find_study(session: Session, study_id: int) -> Study:
    """The study, or `NotFoundError`."""
    study = StudyRepository(session).find(study_id)
    if study is None:
        raise NotFoundError(f"no study has id {study_id}")
    return study

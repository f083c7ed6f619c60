"""Read studies: a page of them, or one with its trial counts and best trial."""

from __future__ import annotations

import weakref
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import Engine
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
        counts = _trial_counts(session, trials, study)
        best = _best_trial(trials, study)
        return StudyDetail.model_validate(
            {
                **StudyRead.model_validate(study).model_dump(),
                "spec": study.spec,
                "trial_counts": {state.value: 0 for state in TrialState} | counts,
                "best_trial": None if best is None else TrialRead.model_validate(best),
            }
        )


_SETTLED = (StudyStatus.COMPLETED, StudyStatus.CANCELLED)
"""No trial of a study in these states changes any more (none runs: the study ended only
when the last one did), so its counts are computed once. (A failed study's running trials
may still report back.)"""

# Per engine (a process's database), never shared between two databases.
_settled_counts: weakref.WeakKeyDictionary[Engine, dict[tuple[int, datetime], dict[str, int]]]
_settled_counts = weakref.WeakKeyDictionary()
_MAX_CACHED = 4096


def _trial_counts(session: Session, trials: TrialRepository, study: Study) -> dict[str, int]:
    """Trials by state: one GROUP BY over the study's trials (10,000 index entries for a large
    study, most of a study read's database time), remembered for a study that has settled."""
    bind = session.get_bind()
    if study.status not in _SETTLED or study.finished_at is None or not isinstance(bind, Engine):
        return trials.count_by_state(study.id)
    cache = _settled_counts.setdefault(bind, {})
    key = (study.id, study.finished_at)
    counts = cache.get(key)
    if counts is None:
        counts = trials.count_by_state(study.id)
        if len(cache) >= _MAX_CACHED:
            cache.clear()
        cache[key] = counts
    return dict(counts)


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

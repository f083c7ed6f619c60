"""Read a study's trials: a page of them, one with its learning curve, its checkpoint file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath

from sqlalchemy.orm import Session

from service.artifacts import ArtifactBody, artifact_store
from service.config import Settings
from service.db.models import Trial, TrialState
from service.db.repositories import (
    JsonTextPage,
    SortOrder,
    StudyRepository,
    TrialRepository,
    TrialSort,
)
from service.studies._reads import reading
from service.studies.errors import ForbiddenError, NotFoundError
from service.studies.schemas import EpochRead, TrialDetail, TrialRead, TrialRef
from service.studies.settled_counts import is_settled, recall, remember
from service.studies.trial_json import trial_page_json


@dataclass(frozen=True)
class CheckpointFile:
    body: ArtifactBody
    download_name: str


def list_trials_json(
    session: Session,
    study_id: int,
    *,
    state: TrialState | None,
    sort: TrialSort,
    order: SortOrder,
    limit: int,
    offset: int,
    problem: str | None = None,
) -> bytes:
    """A page of the study's trials, without their epochs, as the JSON of `Page[TrialRead]`:
    one round trip, whose count is left out when the study has settled and its counts are
    remembered (by state: a page filtered by problem always counts)."""
    with reading(session):
        trials = TrialRepository(session)
        remembered = recall(session, study_id) if problem is None else None
        page = trials.page_json_text(
            study_id,
            state=state,
            sort=sort,
            order=order,
            limit=limit,
            offset=offset,
            with_total=remembered is None,
            problem=problem,
        )
        if problem is not None:
            total = page.total if page.total is not None else trials.count(study_id, state, problem)
            if not page.rows and total == 0:
                _require_study(session, study_id)
        else:
            total = _page_total(session, trials, study_id, state, page, remembered)
    return trial_page_json(page.rows, total, limit, offset)


def _page_total(
    session: Session,
    trials: TrialRepository,
    study_id: int,
    state: TrialState | None,
    page: JsonTextPage,
    remembered: tuple[datetime, dict[str, int]] | None,
) -> int:
    if not page.rows:  # an empty page: past the end, or no such study
        total = trials.count(study_id, state)
        if total == 0:  # trials imply their study; only an empty page needs the check
            _require_study(session, study_id)
        return total
    finished_at = page.study_finished_at
    if finished_at is None or not is_settled(page.study_status, finished_at):
        return page.total if page.total is not None else trials.count(study_id, state)
    if remembered is not None and remembered[0] == finished_at:
        counts = remembered[1]
    else:
        counts = trials.count_by_state(study_id)
        remember(session, study_id, finished_at, counts)
    return sum(counts.values()) if state is None else counts.get(state.value, 0)


def get_trial(session: Session, study_id: int, number: int) -> TrialDetail:
    """Everything about one trial, with its per-epoch curve and the trial it retries."""
    with reading(session):
        trials = TrialRepository(session)
        trial = _find_trial(session, study_id, number, with_epochs=True)
        retried = None if trial.retry_of_id is None else trials.find_listed(trial.retry_of_id)
        return TrialDetail.model_validate(
            {
                **TrialRead.model_validate(trial).model_dump(),
                "study_id": trial.study_id,
                "optuna_trial_id": trial.optuna_trial_id,
                "best_metrics": trial.best_metrics,
                "diagnosis_detail": trial.diagnosis_detail,
                "error": trial.error,
                "worker_id": trial.worker_id,
                "heartbeat_at": trial.heartbeat_at,
                "has_checkpoint": trial.checkpoint_path is not None,
                "retry_of": None
                if retried is None
                else TrialRef(id=retried.id, number=retried.number),
                "resumed_from_epoch": trial.resumed_from_epoch,
                "plugin_versions": trial.plugin_versions,
                "problems": trial.problems or [],
                "epochs": [EpochRead.model_validate(epoch) for epoch in trial.epochs],
            }
        )


def trial_checkpoint(
    session: Session, settings: Settings, study_id: int, number: int
) -> CheckpointFile:
    """The trial's best checkpoint, if it exists and lies inside the server's artifact store."""
    with reading(session):
        recorded = _find_trial(session, study_id, number).checkpoint_path
    if recorded is None:
        raise NotFoundError(f"trial {number} of study {study_id} has no checkpoint")
    store = artifact_store(settings)
    if store.key_of(recorded) is None:
        raise ForbiddenError(
            f"the checkpoint of trial {number} lies outside the server's artifact store "
            f"({store.describe()})"
        )
    body = store.open(recorded)
    if body is None:
        raise NotFoundError(
            f"the checkpoint of trial {number} of study {study_id} is no longer stored"
        )
    return CheckpointFile(body, f"study-{study_id}-trial-{number}{PurePath(recorded).suffix}")


def _require_study(session: Session, study_id: int) -> None:
    if not StudyRepository(session).exists(study_id):
        raise NotFoundError(f"no study has id {study_id}")


def _find_trial(
    session: Session, study_id: int, number: int, *, with_epochs: bool = False
) -> Trial:
    trial = TrialRepository(session).find_by_number(study_id, number, with_epochs=with_epochs)
    if trial is None:
        _require_study(session, study_id)
        raise NotFoundError(f"study {study_id} has no trial number {number}")
    return trial

"""Read a study's trials: a page of them, one with its learning curve, its checkpoint file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from service.config import Settings
from service.db.models import Trial, TrialState
from service.db.repositories import SortOrder, StudyRepository, TrialRepository, TrialSort
from service.studies._reads import reading
from service.studies.errors import ForbiddenError, NotFoundError
from service.studies.schemas import EpochRead, Page, TrialDetail, TrialRead, TrialRef


@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    download_name: str


def list_trials(
    session: Session,
    study_id: int,
    *,
    state: TrialState | None,
    sort: TrialSort,
    order: SortOrder,
    limit: int,
    offset: int,
) -> Page[TrialRead]:
    """A page of the study's trials, without their epochs."""
    with reading(session):
        rows, total = TrialRepository(session).page(
            study_id, state=state, sort=sort, order=order, limit=limit, offset=offset
        )
        if total == 0:  # trials imply their study; only an empty page needs the check
            _require_study(session, study_id)
        items = [TrialRead.model_validate(row) for row in rows]
    return Page[TrialRead](items=items, total=total, limit=limit, offset=offset)


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
                "epochs": [EpochRead.model_validate(epoch) for epoch in trial.epochs],
            }
        )


def trial_checkpoint(
    session: Session, settings: Settings, study_id: int, number: int
) -> CheckpointFile:
    """The trial's best checkpoint, if it exists and lies inside the checkpoint directory."""
    with reading(session):
        recorded = _find_trial(session, study_id, number).checkpoint_path
    if recorded is None:
        raise NotFoundError(f"trial {number} of study {study_id} has no checkpoint")
    root = settings.checkpoint_dir.resolve()
    path = Path(recorded).resolve()  # relative: to the working directory, as checkpoint_dir
    if not path.is_relative_to(root):
        raise ForbiddenError(
            f"the checkpoint of trial {number} lies outside the server's checkpoint directory"
        )
    if not path.is_file():
        raise NotFoundError(
            f"the checkpoint of trial {number} of study {study_id} is no longer on disk"
        )
    return CheckpointFile(path, f"study-{study_id}-trial-{number}{path.suffix}")


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

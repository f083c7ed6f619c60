"""Use cases: submit, read, cancel, delete and export studies; upload data sets.

Each use case takes the caller's session and owns its transaction (`with session.begin()`, or
`with reading(session)` for reads),
calls repositories for the SQL, and returns frozen schemas from `service.studies.schemas`.
"""

from service.db.models import StudyStatus, TrialState
from service.db.repositories import SortOrder, TrialSort
from service.studies.browse import get_study, list_studies
from service.studies.datasets import Upload, delete_dataset, list_datasets, register_dataset
from service.studies.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    Issue,
    NotFoundError,
    ServiceError,
    TooLargeError,
)
from service.studies.export import TrialTable, export_trials
from service.studies.health import check_health
from service.studies.lifecycle import cancel_study, delete_study, extend_study
from service.studies.pareto import pareto_front
from service.studies.plugins import list_plugins, load_plugins
from service.studies.report import StudyReport, build_report
from service.studies.spec import StudySpec
from service.studies.stats import ServiceStats, collect_stats
from service.studies.submit import submit_study
from service.studies.trials import CheckpointFile, get_trial, list_trials_json, trial_checkpoint
from service.studies.workers import list_workers
from trainer import SpecError

__all__ = [
    "CheckpointFile",
    "ConflictError",
    "ForbiddenError",
    "InvalidInputError",
    "Issue",
    "NotFoundError",
    "ServiceError",
    "ServiceStats",
    "SortOrder",
    "SpecError",
    "StudyReport",
    "StudySpec",
    "StudyStatus",
    "TooLargeError",
    "TrialSort",
    "TrialState",
    "TrialTable",
    "Upload",
    "build_report",
    "cancel_study",
    "check_health",
    "collect_stats",
    "delete_dataset",
    "delete_study",
    "export_trials",
    "extend_study",
    "get_study",
    "get_trial",
    "list_datasets",
    "list_plugins",
    "list_studies",
    "list_trials_json",
    "list_workers",
    "load_plugins",
    "pareto_front",
    "register_dataset",
    "submit_study",
    "trial_checkpoint",
]

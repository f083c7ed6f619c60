"""Submit a study: check what only the server knows (limits, uploaded data), then queue it."""

from __future__ import annotations

from uuid import uuid4

from sqlalchemy.orm import Session

from service.config import Settings
from service.db.models import Study, StudyStatus
from service.db.repositories import DatasetRepository, StudyRepository
from service.studies._optuna import delete_optuna_study, seed_optuna_study
from service.studies.advice import confirm_warnings, spec_warnings
from service.studies.errors import InvalidInputError, Issue
from service.studies.limits import budget_issues, size_issues
from service.studies.schemas import StudyRead
from service.studies.spec import StudySpec, UploadedDataset
from service.studies.tokens import SERVER, Principal, quota_issues
from service.studies.warm_start import prepare_warm_start
from trainer import SpecError


def submit_study(
    session: Session, settings: Settings, spec: StudySpec, principal: Principal = SERVER
) -> StudyRead:
    """Store `spec` as a queued study; raises `InvalidInputError` (nothing stored) when it
    breaks a server limit, names an uploaded data set that does not exist, or names warm-start
    sources that cannot seed it. A warm start's trials are written to the study's Optuna study
    first (a second database writer inside our transaction would wait on SQLite's lock), and
    that Optuna study is removed again if the study is not stored."""
    issues = budget_issues(spec, settings)
    if not isinstance(spec.dataset, UploadedDataset):
        issues += size_issues(spec, settings, spec.dataset)
    optuna_name = f"hps-{uuid4().hex}"
    warm = None
    if spec.warm_start is not None and not issues:
        with session.begin():
            warm = prepare_warm_start(session, spec)
        seed_optuna_study(
            optuna_name,
            settings.effective_database_url,
            spec.primary.resolved_direction,
            warm.trials,
            settings.db_prepared_statements,
        )
    try:
        with session.begin():
            if isinstance(spec.dataset, UploadedDataset):
                issues += _uploaded_dataset_issues(session, settings, spec, spec.dataset)
            issues += quota_issues(session, principal, spec.priority, spec.budget.n_trials)
            if issues:
                raise InvalidInputError(issues)
            study = StudyRepository(session).add(
                Study(
                    name=spec.name,
                    spec=spec.model_dump(mode="json"),
                    status=StudyStatus.QUEUED.value,
                    priority=spec.priority,
                    direction=spec.primary.resolved_direction,
                    objective_metric=spec.primary.metric,
                    n_trials=spec.budget.n_trials,
                    max_parallel_trials=spec.budget.max_parallel_trials,
                    # No study runs unbounded: without its own timeout it gets the server's
                    # ceiling.
                    timeout_s=spec.budget.timeout_s or settings.max_timeout_s,
                    optuna_study_name=optuna_name,
                    cancel_requested=False,
                    owner_token_id=principal.token_id,
                )
            )
            warnings = spec_warnings(spec.primary.metric, spec.search_space)
            warnings += confirm_warnings(study.spec)
            warnings += [] if warm is None else warm.notes
            return StudyRead.model_validate(study).model_copy(update={"warnings": warnings})
    except BaseException:
        if warm is not None:
            delete_optuna_study(
                optuna_name, settings.effective_database_url, settings.db_prepared_statements
            )
        raise


def _uploaded_dataset_issues(
    session: Session, settings: Settings, spec: StudySpec, reference: UploadedDataset
) -> list[Issue]:
    """The upload must exist, the spec's metrics must be of its task, and its data and the
    spec's largest model within the server's limits."""
    row = DatasetRepository(session).find(reference.id)
    if row is None:
        return [
            Issue(
                ("dataset", "id"),
                f"no uploaded data set has id {reference.id} "
                "(upload one with POST /api/v1/datasets)",
                "not_found",
            )
        ]
    resolved = reference.resolved(row.path, row.format, row.target, row.task)
    try:
        spec.template(resolved)
    except SpecError as error:
        return [Issue(error.path, f"{error.reason} (uploaded data set {row.id} is {row.task})")]
    outputs = (row.n_classes if row.task == "classification" else row.n_targets) or 1
    return size_issues(spec, settings, resolved, (row.n_rows, (row.n_features,), outputs))

"""What the dashboard's plots and tables read: compact, columnar answers for whole studies.

/api/v1/dashboard/studies            studies with their trials counted by state
/api/v1/studies/{id}/summary         every trial as columns (values, best so far, params, ...)
/api/v1/studies/{id}/intermediate    the objective per epoch of the latest trials
/api/v1/studies/{id}/importances     Optuna's parameter importances
/api/v1/studies/{id}/table           a trial page filtered by state, diagnosis and problem
/api/v1/studies/{id}/diagnoses       the diagnosis labels present (the table's filter)
/api/v1/dashboard/parse-spec         a pasted JSON or YAML spec as JSON (before submitting)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from service.api.deps import (
    PageDep,
    PrivateAccess,
    ReadAccess,
    SessionDep,
    SettingsDep,
    WriteAccess,
)
from service.api.paths import API_PREFIX, StudyId
from service.studies import SortOrder, StudyStatus, TrialState
from service.studies.analysis import (
    MAX_IMPORTANCE_TRIALS,
    MAX_INTERMEDIATE_TRIALS,
    IntermediateValues,
    ParamImportances,
    StudyOverview,
    StudySummary,
    TableSort,
    get_intermediate_values,
    get_param_importances,
    get_study_summary,
    list_diagnoses,
    list_study_overviews,
    list_trial_table,
)
from service.studies.schemas import Page, ProblemLabel, TrialRead
from service.studies.spec_text import parse_spec_text

router = APIRouter(prefix=API_PREFIX, tags=["dashboard"], dependencies=[ReadAccess])

NO_DIAGNOSIS = "none"
MAX_SPEC_TEXT = 256 * 1024


@router.get("/dashboard/studies")
def studies(
    session: SessionDep,
    page: PageDep,
    status: Annotated[StudyStatus | None, Query(description="only studies in this status")] = None,
) -> Page[StudyOverview]:
    """Studies, newest first, each with its trials counted by state (its progress)."""
    return list_study_overviews(session, status=status, limit=page.limit, offset=page.offset)


@router.get("/studies/{study_id}/summary")
def summary(study_id: StudyId, session: SessionDep) -> StudySummary:
    """Every trial of the study as columns, by number: state, value, best value so far,
    parameters, diagnosis, final train and validation error, duration."""
    return get_study_summary(session, study_id)


@router.get("/studies/{study_id}/intermediate")
def intermediate(
    study_id: StudyId,
    session: SessionDep,
    latest: Annotated[
        int, Query(ge=1, le=MAX_INTERMEDIATE_TRIALS, description="the latest trials, at most")
    ] = 300,
) -> IntermediateValues:
    """The study's objective metric at each epoch of its latest trials, pruned ones included."""
    return get_intermediate_values(session, study_id, latest=latest)


@router.get("/studies/{study_id}/importances", dependencies=[PrivateAccess])
def importances(study_id: StudyId, session: SessionDep, settings: SettingsDep) -> ParamImportances:
    """Parameter importances by Optuna's fANOVA evaluator, fitted on the latest
    complete trials (at most MAX_IMPORTANCE_TRIALS); they sum to 1."""
    return get_param_importances(session, settings, study_id, max_trials=MAX_IMPORTANCE_TRIALS)


@router.get("/studies/{study_id}/table")
def table(
    study_id: StudyId,
    session: SessionDep,
    page: PageDep,
    state: Annotated[
        list[TrialState] | None, Query(description="only trials in these states")
    ] = None,
    diagnosis: Annotated[
        list[Annotated[str, Query(max_length=40)]] | None,
        Query(description=f"only trials with these diagnoses ('{NO_DIAGNOSIS}': without one)"),
    ] = None,
    sort: Annotated[TableSort, Query(description="empty values come last")] = "number",
    order: Annotated[SortOrder, Query()] = "asc",
    problem: Annotated[
        ProblemLabel | None, Query(description="only trials that showed this training problem")
    ] = None,
) -> Page[TrialRead]:
    """A page of the study's trials, sortable, filtered by state, diagnosis and problem."""
    return list_trial_table(
        session,
        study_id,
        states=state or [],
        diagnoses=[None if label == NO_DIAGNOSIS else label for label in diagnosis or []],
        sort=sort,
        order=order,
        limit=page.limit,
        offset=page.offset,
        problem=problem,
    )


@router.get("/studies/{study_id}/diagnoses")
def diagnoses(study_id: StudyId, session: SessionDep) -> list[str]:
    """The diagnosis labels the study's trials carry."""
    return list_diagnoses(session, study_id)


@router.post("/dashboard/parse-spec", dependencies=[WriteAccess])
def parse_spec(
    text: Annotated[
        str,
        Body(media_type="text/plain", max_length=MAX_SPEC_TEXT, description="JSON or YAML"),
    ],
) -> dict[str, Any]:
    """A spec pasted as JSON or YAML, as the JSON object to POST to /studies (nothing is
    validated or stored here: the submit does that). YAML aliases are refused."""
    return parse_spec_text(text)

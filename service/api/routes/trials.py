"""/studies/{study_id}/trials: list, read, download a checkpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response, StreamingResponse

from service.api.deps import PageDep, PrivateAccess, ReadAccess, SessionDep, SettingsDep
from service.api.paths import API_PREFIX, StudyId, TrialNumber
from service.studies import (
    SortOrder,
    TrialSort,
    TrialState,
    get_trial,
    list_trials_json,
    trial_checkpoint,
)
from service.studies.schemas import Page, ProblemLabel, TrialDetail, TrialRead

router = APIRouter(
    prefix=API_PREFIX + "/studies/{study_id}/trials", tags=["trials"], dependencies=[ReadAccess]
)


@router.get("", response_model=Page[TrialRead])
def list_(
    study_id: StudyId,
    session: SessionDep,
    page: PageDep,
    state: Annotated[TrialState | None, Query(description="only trials in this state")] = None,
    sort: Annotated[TrialSort, Query(description="number, or value (no value: last)")] = "number",
    order: Annotated[SortOrder, Query()] = "asc",
    problem: Annotated[
        ProblemLabel | None, Query(description="only trials that showed this training problem")
    ] = None,
) -> Response:
    """A page of the study's trials, without their learning curves."""
    body = list_trials_json(
        session,
        study_id,
        state=state,
        sort=sort,
        order=order,
        limit=page.limit,
        offset=page.offset,
        problem=problem,
    )
    return Response(body, media_type="application/json")


@router.get("/{number}")
def read(study_id: StudyId, number: TrialNumber, session: SessionDep) -> TrialDetail:
    """Everything about one trial, with its per-epoch curve."""
    return get_trial(session, study_id, number)


@router.get(
    "/{number}/checkpoint",
    dependencies=[PrivateAccess],
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def checkpoint(
    study_id: StudyId, number: TrialNumber, session: SessionDep, settings: SettingsDep
) -> Response:
    """The trial's best checkpoint file (a Lightning checkpoint)."""
    found = trial_checkpoint(session, settings, study_id, number)
    body, name = found.body, found.download_name
    if body.path is not None:
        return FileResponse(body.path, media_type="application/octet-stream", filename=name)
    assert body.chunks is not None
    return StreamingResponse(  # from the object store, through the token check
        body.chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(body.size),
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )

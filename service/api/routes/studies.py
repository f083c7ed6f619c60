"""/studies: submit, list, read, Pareto front, report, cancel, extend, delete, export."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from service.api.deps import PageDep, ReadAccess, SessionDep, SettingsDep, Writer
from service.api.paths import API_PREFIX, StudyId
from service.studies import (
    StudyReport,
    StudySpec,
    StudyStatus,
    build_report,
    cancel_study,
    delete_study,
    export_trials,
    extend_study,
    get_study,
    list_studies,
    pareto_front,
    submit_study,
)
from service.studies.schemas import ExtendRequest, Page, ParetoFront, StudyDetail, StudyRead

router = APIRouter(prefix=f"{API_PREFIX}/studies", tags=["studies"], dependencies=[ReadAccess])


@router.post("", status_code=status.HTTP_201_CREATED)
def submit(
    spec: StudySpec, session: SessionDep, settings: SettingsDep, writer: Writer
) -> StudyRead:
    """Queue a study. The spec is validated in full first (422 with the offending field's
    path); nothing is stored unless it is valid and within this server's limits and the
    token's (its highest priority, its trials queued at once)."""
    return submit_study(session, settings, spec, writer)


@router.get("")
def list_(
    session: SessionDep,
    page: PageDep,
    status: Annotated[StudyStatus | None, Query(description="only studies in this status")] = None,
) -> Page[StudyRead]:
    """Studies, newest first."""
    return list_studies(session, status=status, limit=page.limit, offset=page.offset)


@router.get("/{study_id}")
def read(study_id: StudyId, session: SessionDep) -> StudyDetail:
    """A study with its spec, its trials counted by state and its best trial."""
    return get_study(session, study_id)


@router.get("/{study_id}/pareto")
def pareto(study_id: StudyId, session: SessionDep) -> ParetoFront:
    """The study's Pareto front: its complete trials that no other complete trial dominates,
    with the objectives they were scored on (a single-objective study: its best trials)."""
    return pareto_front(session, study_id)


@router.get("/{study_id}/report")
def report(study_id: StudyId, session: SessionDep) -> StudyReport:
    """What the study teaches: each searched technique's importance and effect (by choice or
    by thirds of its range, bootstrap 95 % intervals, trial counts), in figures and in
    sentences no stronger than the figures; training problems by choice; the best
    configuration against Keras's defaults."""
    return build_report(session, study_id)


@router.post("/{study_id}/cancel")
def cancel(study_id: StudyId, session: SessionDep, writer: Writer) -> StudyRead:
    """A queued study is cancelled at once; a running one is asked to stop starting trials
    (`cancel_requested`; its running trials finish). 409 if it has already finished; 403 for
    a token that did not submit it (unless admin)."""
    return cancel_study(session, study_id, writer)


@router.post("/{study_id}/extend")
def extend(
    study_id: StudyId,
    body: ExtendRequest,
    session: SessionDep,
    settings: SettingsDep,
    writer: Writer,
) -> StudyRead:
    """Add `n_trials` trials. A queued or running study gets them on top of its budget; a
    completed one is queued again to run them, with the same Optuna study (the sampler sees
    every earlier trial). 409 for a failed or cancelled study."""
    return extend_study(session, settings, study_id, body.n_trials, writer)


@router.delete("/{study_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete(
    study_id: StudyId, session: SessionDep, settings: SettingsDep, writer: Writer
) -> Response:
    """Delete a study that is not running, with its trials, Optuna study and checkpoints
    (403 for a token that did not submit it, unless admin)."""
    delete_study(session, settings, study_id, writer)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{study_id}/export",
    responses={
        200: {
            "content": {"text/csv": {}, "application/json": {}},
            "description": "one flat row per trial",
        }
    },
)
def export(
    study_id: StudyId,
    session: SessionDep,
    format: Annotated[Literal["csv", "json"], Query(description="csv or json")] = "csv",
) -> Response:
    """Every trial as one flat row: number, state, value, `param_<name>`s, final metrics,
    epochs_run, best_epoch, diagnosis, duration_s, confirmation (`pandas.read_csv` reads it
    as is)."""
    table = export_trials(session, study_id)
    filename = f"study-{study_id}-trials.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "csv":
        return Response(table.to_csv(), media_type="text/csv; charset=utf-8", headers=headers)
    return Response(
        json.dumps(table.to_records(), allow_nan=False),
        media_type="application/json",
        headers=headers,
    )

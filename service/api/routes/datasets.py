"""/datasets: upload a CSV or NPZ file, list uploads."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.api.deps import PageDep, ReadAccess, SessionDep, SettingsDep, Writer
from service.api.paths import API_PREFIX, DatasetId
from service.api.uploads import bounded_form
from service.studies import (
    InvalidInputError,
    Issue,
    Upload,
    delete_dataset,
    list_datasets,
    register_dataset,
)
from service.studies.schemas import DatasetRead, Page

router = APIRouter(prefix=f"{API_PREFIX}/datasets", tags=["datasets"], dependencies=[ReadAccess])

_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "a .csv (header row, numeric features) or .npz "
                            "(arrays X and y) file",
                        },
                        "target": {"type": "string", "description": "CSV: the label column"},
                        "task": {
                            "type": "string",
                            "enum": ["classification", "regression"],
                            "description": "default: regression for targets with fractional "
                            "parts, classification otherwise",
                        },
                        "name": {"type": "string", "description": "default: the file's name"},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_FORM,
    responses={413: {"description": "the file is larger than HPS_MAX_UPLOAD_BYTES"}},
)
async def upload(
    request: Request, session: SessionDep, settings: SettingsDep, writer: Writer
) -> DatasetRead:
    """Upload a data set. It is loaded as a trial would load it before it is recorded, so a
    file the trainer cannot use is refused (422) here rather than failing every trial later.
    Refer to it in a study spec as `{"dataset": {"id": ...}}`."""
    async with bounded_form(request, settings.max_upload_bytes) as form:
        file = form.get("file")
        if not isinstance(file, UploadFile) or not file.filename:
            raise InvalidInputError([Issue(("file",), "a file is required", "missing")])
        received = Upload(
            file=file.file,
            filename=file.filename,
            target=_text(form.get("target")),
            name=_text(form.get("name")),
            task=_text(form.get("task")),
        )
        return await run_in_threadpool(register_dataset, session, settings, received, writer)


@router.get("")
def list_(session: SessionDep, page: PageDep) -> Page[DatasetRead]:
    """Uploaded data sets, newest first."""
    return list_datasets(session, limit=page.limit, offset=page.offset)


def _text(value: str | UploadFile | None) -> str | None:
    """A text field's value, None when absent or blank."""
    return value.strip() or None if isinstance(value, str) else None


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        403: {"description": "a write token deletes only the data sets it uploaded"},
        409: {"description": "a queued or running study uses it"},
    },
)
def delete(
    dataset_id: DatasetId, session: SessionDep, settings: SettingsDep, writer: Writer
) -> Response:
    """Delete an upload and its file, unless a queued or running study uses it (409); a
    write token deletes only the uploads it made (an admin token any)."""
    delete_dataset(session, settings, dataset_id, writer)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""Exception handlers: every client error is JSON with a `detail`.

422s (pydantic's and the use cases' `InvalidInputError`) carry a list of
`{"loc": ["body", ...], "msg", "type"}`; other errors a message.
"""

from __future__ import annotations

import logging
import re
import uuid

from fastapi import FastAPI, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from service.api.validation import error_details, issue_details
from service.artifacts import ArtifactStoreError
from service.db.schema import schema_state
from service.studies import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    ServiceError,
    TooLargeError,
)

logger = logging.getLogger(__name__)

_STATUS: dict[type[ServiceError], int] = {
    NotFoundError: status.HTTP_404_NOT_FOUND,
    ConflictError: status.HTTP_409_CONFLICT,
    ForbiddenError: status.HTTP_403_FORBIDDEN,
    TooLargeError: status.HTTP_413_CONTENT_TOO_LARGE,
}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_invalid)  # type: ignore[arg-type]
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.add_exception_handler(OperationalError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(ProgrammingError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(ArtifactStoreError, _store_error)  # type: ignore[arg-type]


async def _request_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse(
        {"detail": error_details(error.errors(), error.body)},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _service_error(request: Request, error: ServiceError) -> JSONResponse:
    if isinstance(error, InvalidInputError):
        return JSONResponse(
            {"detail": issue_details(error.issues)},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    code = next(
        (code for kind, code in _STATUS.items() if isinstance(error, kind)),
        status.HTTP_400_BAD_REQUEST,
    )
    return JSONResponse({"detail": error.message}, status_code=code)


async def _database_error(request: Request, error: SQLAlchemyError) -> JSONResponse:
    """A database that lost its schema (dropped, or downgraded under a running server) or
    went away: a 503 that says so, never a bare 500. Anything else is a bug: re-raised."""
    url = request.app.state.settings.effective_database_url
    try:
        state = await run_in_threadpool(schema_state, url)
    except OperationalError:
        logger.warning(
            "database unavailable during %s %s: %s", request.method, request.url.path, error
        )
        return JSONResponse(
            {"detail": "the database is unavailable; try again shortly"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    problem = state.problem()
    if problem is None:
        raise error
    logger.error("%s %s: %s", request.method, request.url.path, problem)
    return JSONResponse({"detail": problem}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


async def _store_error(request: Request, error: ArtifactStoreError) -> JSONResponse:
    """The object store is away or refuses us: a 503 naming the store, never a bare 500 (the
    message carries no credentials: boto3 never puts them in one)."""
    logger.warning("%s %s: %s", request.method, request.url.path, error)
    return JSONResponse(
        {"detail": f"the artifact store is unavailable; try again shortly ({error})"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(request: Request) -> str:
    """The client's `X-Request-ID` when it is a plain token (so a log line cannot be forged
    through it), else a new one."""
    given = request.headers.get("x-request-id", "")
    return given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    """A bug: the traceback goes to the server log under a request id, the client gets the id
    (to quote) and never the traceback."""
    rid = request_id(request)
    logger.error("request %s: %s %s failed", rid, request.method, request.url.path, exc_info=error)
    return JSONResponse(
        {
            "detail": f"internal server error (request id {rid}; the server log has the details)",
            "request_id": rid,
        },
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        headers={"X-Request-ID": rid},
    )

"""The API's dependencies, as `Annotated` aliases: settings, a session per request, access
checks, and pagination.

None does I/O on the event loop, so all are `async def`: FastAPI would hand each sync one to
the thread pool, a hop per dependency per request, and a request's only hop is then its (sync)
route handler. A session is created without a connection; the use case's transaction takes one
and gives it back when it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.auth import token_matches
from service.api.runtime import Runtime
from service.config import Settings
from service.studies.tokens import SERVER, Principal

MAX_PAGE_SIZE = 200


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise RuntimeError("the app has not started (run it under a server or `with TestClient`)")
    return runtime


async def _session(runtime: Annotated[Runtime, Depends(_runtime)]) -> AsyncIterator[Session]:
    """A session for the request; the use case it is handed to opens and ends transactions."""
    session = runtime.session_factory()  # no connection yet: nothing here blocks
    try:
        yield session
    finally:
        if session.in_transaction():  # left open by an error: rolling back is database I/O
            await run_in_threadpool(session.close)
        else:
            session.close()


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(_session)]

_bearer = HTTPBearer(
    auto_error=False,
    description="HPS_API_TOKEN (or the token the server generated into <data_dir>/api-token)",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _authenticate(
    runtime: Runtime, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The server's tokens first (no database read), then the issued ones (`studies.tokens`),
    whose answers are kept `TOKEN_CACHE_S` so that a revocation takes effect that soon."""
    if credentials is None:
        raise _unauthorized("a bearer token is required")
    given = credentials.credentials
    if token_matches(given, runtime.api_tokens):
        return SERVER
    principal = await run_in_threadpool(runtime.issued_token, given)
    if principal is None:
        raise _unauthorized("missing or invalid bearer token")
    return principal


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def require_read(
    settings: SettingsDep,
    runtime: Annotated[Runtime, Depends(_runtime)],
    credentials: Credentials,
) -> Principal | None:
    """Reads need a token (of any scope) unless `public_read` is set."""
    if settings.public_read and credentials is None:
        return None
    return await _authenticate(runtime, credentials)


async def require_write(
    runtime: Annotated[Runtime, Depends(_runtime)], credentials: Credentials
) -> Principal:
    """Every write needs a write or admin token."""
    principal = await _authenticate(runtime, credentials)
    if not principal.writes:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"token {principal.name!r} may only read (scope read)"
        )
    return principal


async def require_admin(
    runtime: Annotated[Runtime, Depends(_runtime)], credentials: Credentials
) -> Principal:
    """Issuing and revoking tokens needs an admin token."""
    principal = await _authenticate(runtime, credentials)
    if not principal.admin:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"token {principal.name!r} is not an admin token"
        )
    return principal


async def require_token(
    runtime: Annotated[Runtime, Depends(_runtime)], credentials: Credentials
) -> Principal:
    """Reads that stay behind the token even with `public_read`: model weights (checkpoints),
    the workers' hosts and pids, and computations costly enough to be a denial of service."""
    return await _authenticate(runtime, credentials)


ReadAccess = Depends(require_read)
WriteAccess = Depends(require_write)
PrivateAccess = Depends(require_token)
AdminAccess = Depends(require_admin)
Writer = Annotated[Principal, Depends(require_write)]
"""The principal of a write, for the use cases that check ownership and limits."""
Admin = Annotated[Principal, Depends(require_admin)]


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


async def _page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1, description="items to skip")] = 0,
) -> PageParams:
    return PageParams(limit, offset)


PageDep = Annotated[PageParams, Depends(_page)]

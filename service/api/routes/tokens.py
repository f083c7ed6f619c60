"""/tokens: issue, list and revoke API tokens (admin tokens only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from service.api.deps import AdminAccess, SessionDep
from service.api.paths import API_PREFIX
from service.studies.tokens import (
    IssuedToken,
    TokenRead,
    TokenRequest,
    issue_token,
    list_tokens,
    revoke_token,
)

router = APIRouter(prefix=f"{API_PREFIX}/tokens", tags=["tokens"], dependencies=[AdminAccess])

TokenName = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]


@router.post("", status_code=status.HTTP_201_CREATED)
def issue(body: TokenRequest, session: SessionDep) -> IssuedToken:
    """Issue a token: `read` (reads only), `write` (submit, and change the studies it
    submitted) or `admin` (everything, and tokens); optional `max_priority` and
    `max_queued_trials`. The secret is in this answer only: store it now."""
    return issue_token(session, body)


@router.get("")
def list_(session: SessionDep) -> list[TokenRead]:
    """The issued tokens, without their secrets."""
    return list_tokens(session)


@router.delete("/{name}")
def revoke(name: TokenName, session: SessionDep) -> TokenRead:
    """Revoke a token: within seconds (each server process keeps a lookup 5 s) it is refused."""
    return revoke_token(session, name)

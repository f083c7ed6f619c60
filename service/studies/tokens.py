"""Issued API tokens: scopes (read, write, admin), limits, revocation.

The server's own tokens (`HPS_API_TOKEN`, or the one it generated) are admin tokens. An admin
issues more through `POST /api/v1/tokens`, each with a scope and optional limits on the
priority of the studies it submits and on the trials it may have queued at once; only a
token's SHA-256 is stored, and the secret is shown once, in the answer that issues it. A
token that is not admin changes only the studies it submitted.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.models import ApiToken, Study, Trial, utcnow
from service.states import ACTIVE_STUDY_STATUSES, ENDED_TRIAL_STATES
from service.studies.errors import ConflictError, ForbiddenError, Issue, NotFoundError

Scope = Literal["read", "write", "admin"]


@dataclass(frozen=True)
class Principal:
    """Who a request's token speaks for."""

    name: str
    scope: Scope
    token_id: int | None = None
    """None for a server token (HPS_API_TOKEN)."""
    max_priority: int | None = None
    max_queued_trials: int | None = None

    @property
    def writes(self) -> bool:
        return self.scope in ("write", "admin")

    @property
    def admin(self) -> bool:
        return self.scope == "admin"


SERVER = Principal("HPS_API_TOKEN", "admin")


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    scope: Scope = "write"
    max_priority: int | None = Field(
        default=None, ge=-1_000_000, le=1_000_000, description="highest study priority"
    )
    max_queued_trials: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,  # an INTEGER column
        description="trials of its queued and running studies not yet run",
    )


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    scope: str
    max_priority: int | None
    max_queued_trials: int | None
    created_at: str | None = None
    revoked: bool = False


class IssuedToken(TokenRead):
    token: str = Field(description="the secret: shown this once, never stored")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(session: Session, request: TokenRequest) -> IssuedToken:
    secret = "hps_" + secrets.token_urlsafe(32)
    row = ApiToken(
        name=request.name,
        token_sha256=digest(secret),
        scope=request.scope,
        max_priority=request.max_priority,
        max_queued_trials=request.max_queued_trials,
    )
    try:
        with session.begin():
            session.add(row)
            session.flush()
            read = _read(row)
    except IntegrityError:
        raise ConflictError(f"a token named {request.name!r} exists already") from None
    return IssuedToken(**read.model_dump(), token=secret)


def list_tokens(session: Session) -> list[TokenRead]:
    with session.begin():
        return [_read(row) for row in session.scalars(select(ApiToken).order_by(ApiToken.id))]


def revoke_token(session: Session, name: str) -> TokenRead:
    with session.begin():
        row = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
        if row is None:
            raise NotFoundError(f"no token is named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _read(row)


def principal_of(session: Session, secret: str) -> Principal | None:
    """The issued, unrevoked token `secret` is (None: no such token)."""
    with session.begin():
        row = session.scalars(
            select(ApiToken).where(
                ApiToken.token_sha256 == digest(secret), ApiToken.revoked_at.is_(None)
            )
        ).first()
        if row is None:
            return None
        scope: Scope = row.scope  # type: ignore[assignment]  # one of SCOPES, as stored
        return Principal(row.name, scope, row.id, row.max_priority, row.max_queued_trials)


def check_may_change(principal: Principal, study: Study) -> None:
    """An admin changes any study; a write token only those it submitted."""
    if not principal.admin and study.owner_token_id != principal.token_id:
        raise ForbiddenError(
            f"token {principal.name!r} may change only the studies it submitted "
            f"(study {study.id} is not one)"
        )


def quota_issues(
    session: Session, principal: Principal, priority: int, n_trials: int
) -> list[Issue]:
    """The token's limits that a new study of `priority` and `n_trials` would break."""
    issues = []
    if principal.max_priority is not None and priority > principal.max_priority:
        issues.append(
            Issue(
                ("priority",),
                f"token {principal.name!r} may submit studies of priority at most "
                f"{principal.max_priority}, got {priority}",
                "less_than_equal",
            )
        )
    if principal.max_queued_trials is not None and principal.token_id is not None:
        queued = _queued_trials(session, principal.token_id)
        if queued + n_trials > principal.max_queued_trials:
            issues.append(
                Issue(
                    ("budget", "n_trials"),
                    f"token {principal.name!r} may have at most {principal.max_queued_trials} "
                    f"trials queued; its studies hold {queued} not yet run, and this one "
                    f"asks for {n_trials}",
                    "less_than_equal",
                )
            )
    return issues


def _queued_trials(session: Session, token_id: int) -> int:
    """Trials the token's queued and running studies have not ended yet."""
    ended = (
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == Study.id, Trial.state.in_(ENDED_TRIAL_STATES))
        .scalar_subquery()
    )
    total = session.execute(
        select(func.coalesce(func.sum(Study.n_trials - ended), 0)).where(
            Study.owner_token_id == token_id, Study.status.in_(ACTIVE_STUDY_STATUSES)
        )
    ).scalar_one()
    return int(total)


def _read(row: ApiToken) -> TokenRead:
    return TokenRead(
        id=row.id,
        name=row.name,
        scope=row.scope,
        max_priority=row.max_priority,
        max_queued_trials=row.max_queued_trials,
        created_at=None if row.created_at is None else row.created_at.isoformat(),
        revoked=row.revoked_at is not None,
    )


__all__ = [
    "SERVER",
    "IssuedToken",
    "Principal",
    "TokenRead",
    "TokenRequest",
    "check_may_change",
    "issue_token",
    "list_tokens",
    "principal_of",
    "quota_issues",
    "revoke_token",
]

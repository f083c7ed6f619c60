"""The database liveness probe."""

from __future__ import annotations

from sqlalchemy import literal, select
from sqlalchemy.orm import Session


def ping(session: Session) -> None:
    """`SELECT 1`; raises `sqlalchemy.exc.SQLAlchemyError` when the database is unreachable."""
    session.execute(select(literal(1)))

"""Is the database there, and at the schema this code expects?"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.db.repositories import ping
from service.db.schema import RECORDED_REVISION, state_of
from service.studies.schemas import Health

logger = logging.getLogger(__name__)


def check_health(session: Session) -> Health:
    try:
        with session.begin():
            ping(session)
    except SQLAlchemyError as error:
        logger.warning("health check: database unreachable: %s", error)
        return Health(status="unavailable", database="unreachable", migrations="unknown")
    try:
        with session.begin():
            found = session.execute(RECORDED_REVISION).scalar_one_or_none()
    except SQLAlchemyError:
        found = None  # no version table: the migrations never ran
    schema = state_of(found)
    problem = schema.problem()
    if problem is not None:
        return Health(status="unavailable", database="ok", migrations=schema.status, detail=problem)
    return Health(status="ok", database="ok", migrations="current")

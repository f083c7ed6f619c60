"""Is the database there?"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.db.repositories import ping
from service.studies.schemas import Health

logger = logging.getLogger(__name__)


def check_health(session: Session) -> Health:
    try:
        with session.begin():
            ping(session)
    except SQLAlchemyError as error:
        logger.warning("health check: database unreachable: %s", error)
        return Health(status="unavailable", database="unreachable")
    return Health(status="ok", database="ok")

"""Read the registered workers and how long ago each was heard from."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from service.db.models import utcnow
from service.db.repositories import WorkerRepository
from service.studies._reads import reading
from service.studies.schemas import Page, WorkerRead


def list_workers(
    session: Session, *, limit: int, offset: int, now: datetime | None = None
) -> Page[WorkerRead]:
    with reading(session):
        rows, total = WorkerRepository(session).page(limit=limit, offset=offset)
        at = now or utcnow()
        items = [
            WorkerRead(
                id=row.id,
                host=row.host,
                pid=row.pid,
                device=row.device,
                status=row.status,
                current_trial_id=row.current_trial_id,
                started_at=row.started_at,
                heartbeat_at=row.heartbeat_at,
                heartbeat_age_s=max(0.0, (at - row.heartbeat_at).total_seconds()),
            )
            for row in rows
        ]
    return Page[WorkerRead](items=items, total=total, limit=limit, offset=offset)

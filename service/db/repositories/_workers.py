"""hps_workers, read side (workers register and heartbeat through service.queue)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import Worker


class WorkerRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def page(self, *, limit: int, offset: int) -> tuple[Sequence[Worker], int]:
        """Workers, most recently heard from first."""
        total = self._session.scalar(select(func.count()).select_from(Worker))
        rows = self._session.scalars(
            select(Worker)
            .order_by(Worker.heartbeat_at.desc(), Worker.id)
            .limit(limit)
            .offset(offset)
        ).all()
        return rows, total or 0

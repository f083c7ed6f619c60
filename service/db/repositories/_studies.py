"""hps_studies: add, find, page, count by status, and the race-free state changes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session, defer, load_only

from service.db.models import Study, StudyStatus, Trial
from service.db.repositories._trials import LISTED_COLUMNS


class StudyRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, study: Study) -> Study:
        """Insert `study` and flush, so its id is known."""
        self._session.add(study)
        self._session.flush()
        return study

    def find(self, study_id: int) -> Study | None:
        """The study as the database has it now (state changes bypass the identity map)."""
        return self._session.get(Study, study_id, populate_existing=True)

    def find_with_best_trial(self, study_id: int) -> tuple[Study, Trial | None] | None:
        """The study as `find` reads it, with the trial its `best_trial_id` names (only the
        columns a list shows; None if unset or not one of its trials), in one round trip."""
        row = self._session.execute(
            select(Study, Trial)
            .outerjoin(Trial, (Trial.id == Study.best_trial_id) & (Trial.study_id == Study.id))
            .options(load_only(*LISTED_COLUMNS))
            .where(Study.id == study_id)
            .execution_options(populate_existing=True)
        ).first()
        return None if row is None else (row[0], row[1])

    def exists(self, study_id: int) -> bool:
        return self._session.scalar(select(Study.id).where(Study.id == study_id)) is not None

    def page(
        self, *, status: StudyStatus | None, limit: int, offset: int
    ) -> tuple[Sequence[Study], int]:
        """A page of studies, newest first, without their spec blobs; and the total."""
        filters = [] if status is None else [Study.status == status]
        total = self._session.scalar(select(func.count()).select_from(Study).where(*filters))
        rows = self._session.scalars(
            select(Study)
            .options(defer(Study.spec))
            .where(*filters)
            .order_by(Study.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        return rows, total or 0

    def count_by_status(self) -> dict[str, int]:
        rows = self._session.execute(select(Study.status, func.count()).group_by(Study.status))
        return dict(rows.all())

    def cancel_if_queued(self, study_id: int, now: datetime) -> bool:
        """queued -> cancelled in one conditional UPDATE (a worker may be claiming it)."""
        return self._changed(
            update(Study)
            .where(Study.id == study_id, Study.status == StudyStatus.QUEUED)
            .values(status=StudyStatus.CANCELLED, finished_at=now, updated_at=now)
        )

    def request_cancel_if_running(self, study_id: int, now: datetime) -> bool:
        """Ask the worker running the study to start no more trials."""
        return self._changed(
            update(Study)
            .where(Study.id == study_id, Study.status == StudyStatus.RUNNING)
            .values(cancel_requested=True, updated_at=now)
        )

    def delete_unless_running(self, study_id: int) -> bool:
        """Delete the study (the database cascades to its trials and their epochs)."""
        return self._changed(
            delete(Study).where(Study.id == study_id, Study.status != StudyStatus.RUNNING)
        )

    def _changed(self, statement: Any) -> bool:
        result = cast(
            "CursorResult[Any]",
            self._session.execute(statement, execution_options={"synchronize_session": False}),
        )
        return result.rowcount == 1

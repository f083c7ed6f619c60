"""hps_datasets: uploaded data files' records."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import Dataset


class DatasetRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, dataset: Dataset) -> Dataset:
        self._session.add(dataset)
        self._session.flush()
        return dataset

    def find(self, dataset_id: int) -> Dataset | None:
        return self._session.get(Dataset, dataset_id)

    def page(self, *, limit: int, offset: int) -> tuple[Sequence[Dataset], int]:
        total = self._session.scalar(select(func.count()).select_from(Dataset))
        rows = self._session.scalars(
            select(Dataset).order_by(Dataset.id.desc()).limit(limit).offset(offset)
        ).all()
        return rows, total or 0

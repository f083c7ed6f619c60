"""Bulk reads for the dashboard: every trial of a study as plain rows, per-epoch values of its
latest trials, trial pages filtered by diagnosis too, trial counts of many studies at once.

Read-only: plain Core rows (no ORM identity map or change tracking), one statement each.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Literal, NamedTuple

from sqlalchemy import ColumnElement, RowMapping, UnaryExpression, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.db.models import Trial, TrialEpoch
from service.db.repositories._trials import LISTED_COLUMNS, SortOrder

TableSort = Literal["number", "value", "state", "diagnosis", "duration_s", "epochs_run"]
EpochMetric = Literal["loss", "accuracy", "val_loss", "val_accuracy"]

_SORT_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "number": Trial.number,
    "value": Trial.value,
    "state": Trial.state,
    "diagnosis": Trial.diagnosis,
    "duration_s": Trial.duration_s,
    "epochs_run": Trial.epochs_run,
}
_EPOCH_COLUMNS: dict[str, InstrumentedAttribute[float | None]] = {
    "loss": TrialEpoch.loss,
    "accuracy": TrialEpoch.accuracy,
    "val_loss": TrialEpoch.val_loss,
    "val_accuracy": TrialEpoch.val_accuracy,
}


class SummaryRow(NamedTuple):
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    metrics: dict[str, Any] | None
    diagnosis: str | None
    duration_s: float | None


class EpochValue(NamedTuple):
    number: int
    state: str
    epoch: int
    value: float | None


class AnalysisRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def summary_rows(self, study_id: int) -> list[SummaryRow]:
        """Every trial of the study, by number, with what the study's plots need."""
        rows = self._session.execute(
            select(
                Trial.number,
                Trial.state,
                Trial.value,
                Trial.params,
                Trial.metrics,
                Trial.diagnosis,
                Trial.duration_s,
            )
            .where(Trial.study_id == study_id)
            .order_by(Trial.number)
        ).all()
        return [SummaryRow(*row) for row in rows]

    def epoch_values(self, study_id: int, metric: EpochMetric, *, latest: int) -> list[EpochValue]:
        """`metric` at each epoch of the study's `latest` trials (highest numbers), ordered by
        trial number then epoch; a trial without epochs yet has no rows."""
        chosen = (
            select(Trial.id)
            .where(Trial.study_id == study_id)
            .order_by(Trial.number.desc())
            .limit(latest)
            .subquery()
        )
        rows = self._session.execute(
            select(Trial.number, Trial.state, TrialEpoch.epoch, _EPOCH_COLUMNS[metric])
            .join(TrialEpoch, TrialEpoch.trial_id == Trial.id)
            .where(Trial.id.in_(select(chosen.c.id)))
            .order_by(Trial.number, TrialEpoch.epoch)
        ).all()
        return [EpochValue(*row) for row in rows]

    def table_page(
        self,
        study_id: int,
        *,
        states: Collection[str],
        diagnoses: Collection[str | None],
        sort: TableSort,
        order: SortOrder,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[RowMapping], int]:
        """A page of trials as plain rows of `LISTED_COLUMNS` and the total, filtered by
        state and by diagnosis (None: trials without one). Empty sort keys come last either
        way; ties go by number."""
        filters: list[ColumnElement[bool]] = [Trial.study_id == study_id]
        if states:
            filters.append(Trial.state.in_(list(states)))
        if diagnoses:
            labels = [label for label in diagnoses if label is not None]
            condition: ColumnElement[bool] = Trial.diagnosis.in_(labels)
            if None in diagnoses:
                condition = condition | Trial.diagnosis.is_(None)
            filters.append(condition)
        column = _SORT_COLUMNS[sort]
        ordering: list[UnaryExpression[Any]] = [
            (column.asc() if order == "asc" else column.desc()).nulls_last()
        ]
        if sort != "number":
            ordering.append(Trial.number.asc())
        total = self._session.scalar(select(func.count()).select_from(Trial).where(*filters))
        rows = (
            self._session.execute(
                select(*LISTED_COLUMNS)
                .where(*filters)
                .order_by(*ordering)
                .limit(limit)
                .offset(offset)
            )
            .mappings()
            .all()
        )
        return rows, total or 0

    def diagnoses(self, study_id: int) -> list[str]:
        """The diagnosis labels the study's trials carry."""
        return list(
            self._session.scalars(
                select(Trial.diagnosis)
                .where(Trial.study_id == study_id, Trial.diagnosis.is_not(None))
                .group_by(Trial.diagnosis)
                .order_by(Trial.diagnosis)
            )
        )

    def counts_by_study(self, study_ids: Collection[int]) -> dict[int, dict[str, int]]:
        """Trials by state for each of `study_ids`: one GROUP BY."""
        counts: dict[int, dict[str, int]] = {study_id: {} for study_id in study_ids}
        if not study_ids:
            return counts
        rows = self._session.execute(
            select(Trial.study_id, Trial.state, func.count())
            .where(Trial.study_id.in_(list(study_ids)))
            .group_by(Trial.study_id, Trial.state)
        )
        for study_id, state, count in rows:
            counts[study_id][state] = count
        return counts

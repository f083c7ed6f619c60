"""Bulk reads for the dashboard: every trial of a study as plain rows, per-epoch values of its
latest trials, trial pages filtered by diagnosis too, trial counts of many studies at once.

Read-only: plain Core rows (no ORM identity map or change tracking), one statement each.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any, Literal, NamedTuple

from sqlalchemy import ColumnElement, Float, RowMapping, Text, UnaryExpression, cast, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.db.models import Trial, TrialEpoch
from service.db.repositories._trials import SortOrder, listed_page, problem_pattern

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
    name: getattr(TrialEpoch, name)
    for name, column in TrialEpoch.__table__.columns.items()
    if name not in ("trial_id", "epoch", "lr") and isinstance(column.type, Float)
}
"""Every epoch metric an objective can name, by name (the table's columns are named so)."""


SUMMARY_METRICS = ("train_error", "val_error", "train_accuracy", "val_accuracy")
"""The final metrics a study summary reads (errors, or accuracies to derive them from)."""


class SummaryRow(NamedTuple):
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    metrics: dict[str, Any]
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
        """Every trial of the study, by number, with what the study's plots need; `metrics`
        holds only `SUMMARY_METRICS`.

        Plain columns come as rows; the JSON ones (params, metrics) as one JSON document the
        database aggregates (json_agg / json_group_array), decoded once: decoding 20,000 small
        JSON values one by one was most of the cost for a 10,000-trial study (0.45 of 0.6 s).
        Floats stay plain columns: SQLite writes REALs into JSON with 15 digits only."""
        rows = self._session.execute(
            select(Trial.number, Trial.state, Trial.value, Trial.diagnosis, Trial.duration_s)
            .where(Trial.study_id == study_id)
            .order_by(Trial.number)
        ).all()
        blobs = self._json_columns(study_id)
        return [
            SummaryRow(number, state, value, *blobs.get(number, ({}, {})), diagnosis, duration_s)
            for number, state, value, diagnosis, duration_s in rows
        ]

    def _json_columns(self, study_id: int) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
        """number -> (params, the summary's metrics), from one aggregated JSON document."""
        postgres = self._session.get_bind().dialect.name == "postgresql"
        if postgres:  # metrics picked in the database; json keeps each number's text as is
            picked = [Trial.metrics.op("->")(key) for key in SUMMARY_METRICS]
            row: Any = func.json_build_array(Trial.number, Trial.params, *picked)
            aggregate: Any = func.json_agg(row)
        else:  # json() keeps a number's text as is too (json_extract would make it a REAL)
            row = func.json_array(Trial.number, func.json(Trial.params), func.json(Trial.metrics))
            aggregate = func.json_group_array(row)
        document = self._session.scalar(
            select(cast(aggregate, Text)).where(Trial.study_id == study_id)
        )
        columns: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        for number, params, *metrics in json.loads(document or "[]"):
            if not postgres:
                whole = metrics[0] or {}
                metrics = [whole.get(key) for key in SUMMARY_METRICS]
            columns[number] = (params or {}, dict(zip(SUMMARY_METRICS, metrics, strict=True)))
        return columns

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
        problem: str | None = None,
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
        if problem is not None:
            filters.append(Trial.problem_labels.like(problem_pattern(problem)))
        column = _SORT_COLUMNS[sort]
        ordering: list[UnaryExpression[Any]] = [
            (column.asc() if order == "asc" else column.desc()).nulls_last()
        ]
        if sort != "number":
            ordering.append(Trial.number.asc())
        return listed_page(self._session, filters, ordering, limit, offset)

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

"""hps_trials (and their epochs): counts by state, pages, one trial, export rows, durations.

Lists use the (study_id, state) and (study_id, value) indexes and never load epochs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Integer,
    RowMapping,
    Select,
    Text,
    UnaryExpression,
    bindparam,
    case,
    cast,
    func,
    select,
)
from sqlalchemy.orm import Session, load_only, selectinload

from service.db.models import Study, Trial, TrialState

TrialSort = Literal["number", "value"]
SortOrder = Literal["asc", "desc"]

LISTED_COLUMNS = (
    Trial.id,
    Trial.study_id,
    Trial.number,
    Trial.state,
    Trial.params,
    Trial.value,
    Trial.objective_values,
    Trial.metrics,
    Trial.epochs_run,
    Trial.best_epoch,
    Trial.stopped_early,
    Trial.diagnosis,
    Trial.device,
    Trial.duration_s,
    Trial.retry_of_id,
    Trial.confirmation,
    Trial.started_at,
    Trial.finished_at,
    Trial.problem_labels,
)
"""The columns a trial list shows (no texts, no checkpoint paths)."""
_LISTED = load_only(*LISTED_COLUMNS)

_TRIALS = Trial.__table__
JSON_TEXT_SCALARS = tuple(
    column.key for column in LISTED_COLUMNS if column.key not in ("study_id", "params", "metrics")
)
"""The plain columns of a `JsonTextPage` row, in order; params and metrics (JSON text) follow."""


def listed_page(
    session: Session,
    filters: Sequence[ColumnElement[bool]],
    ordering: Sequence[UnaryExpression[Any]],
    limit: int,
    offset: int,
) -> tuple[Sequence[RowMapping], int]:
    """A page of trials as plain rows of `LISTED_COLUMNS`, and how many match `filters`.

    The total rides along as an uncorrelated subquery (computed once): one round trip per
    page instead of two, which is most of a page's cost under load."""
    count = select(func.count()).select_from(Trial).where(*filters)
    rows = (
        session.execute(
            select(*LISTED_COLUMNS, count.scalar_subquery().label("total"))
            .where(*filters)
            .order_by(*ordering)
            .limit(limit)
            .offset(offset)
        )
        .mappings()
        .all()
    )
    if rows:
        return rows, int(rows[0]["total"])
    return rows, session.scalar(count) or 0  # a page past the end: count alone


@dataclass(frozen=True)
class JsonTextPage:
    """A page of trials whose params and metrics are JSON text, with the study's status and
    end time read in the same statement (None when the page is empty)."""

    rows: Sequence[tuple[Any, ...]]
    """`JSON_TEXT_SCALARS`, then params and metrics as JSON text (metrics may be None)."""
    total: int | None
    """How many trials match, when it was asked for and the page has rows."""
    study_status: str | None
    study_finished_at: datetime | None


class ExportRow(NamedTuple):
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    metrics: dict[str, Any] | None
    epochs_run: int
    best_epoch: int | None
    diagnosis: str | None
    duration_s: float | None
    problems: list[dict[str, Any]] | None
    confirmation: bool


@dataclass(frozen=True)
class DurationHistogram:
    """Finished trials' durations: cumulative counts per upper bound, count and sum."""

    bounds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]
    count: int
    total_s: float


class TrialRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def count_by_state(self, study_id: int | None = None) -> dict[str, int]:
        """Trials by state, of one study or of all: one GROUP BY."""
        statement = select(Trial.state, func.count()).group_by(Trial.state)
        if study_id is not None:
            statement = statement.where(Trial.study_id == study_id)
        return dict(self._session.execute(statement).all())

    def find(self, trial_id: int) -> Trial | None:
        return self._session.get(Trial, trial_id)

    def find_listed(self, trial_id: int) -> Trial | None:
        """A trial with only the columns a list shows."""
        return self._session.scalar(select(Trial).options(_LISTED).where(Trial.id == trial_id))

    def find_by_number(
        self, study_id: int, number: int, *, with_epochs: bool = False
    ) -> Trial | None:
        statement = select(Trial).where(Trial.study_id == study_id, Trial.number == number)
        if with_epochs:
            statement = statement.options(selectinload(Trial.epochs))
        return self._session.scalar(statement)

    def complete(self, study_id: int) -> Sequence[Trial]:
        """The study's complete trials, with the columns a list shows, by number."""
        return self._session.scalars(
            select(Trial)
            .options(_LISTED)
            .where(Trial.study_id == study_id, Trial.state == TrialState.COMPLETE)
            .order_by(Trial.number)
        ).all()

    def has_confirmations(self, study_id: int) -> bool:
        """Whether a trial of the study is a confirmation (spec.confirm)."""
        confirmations = select(Trial.id).where(
            Trial.study_id == study_id, Trial.confirmation.is_(True)
        )
        return bool(self._session.scalar(select(confirmations.exists())))

    def complete_draws(self, study_id: int) -> Sequence[tuple[int, dict[str, Any], float, bool]]:
        """(number, params, value, confirmation) of the study's complete trials with a value,
        by number."""
        rows = self._session.execute(
            select(Trial.number, Trial.params, Trial.value, Trial.confirmation)
            .where(
                Trial.study_id == study_id,
                Trial.state == TrialState.COMPLETE,
                Trial.value.is_not(None),
            )
            .order_by(Trial.number)
        ).all()
        return [(number, params, value, flag) for number, params, value, flag in rows]

    def diverged_params(self, study_id: int) -> Sequence[dict[str, Any]]:
        """The params of the study's trials that diverged (their loss became non-finite)."""
        return self._session.scalars(
            select(Trial.params).where(
                Trial.study_id == study_id,
                Trial.state == TrialState.FAILED,
                Trial.problem_labels.like(problem_pattern("diverged")),
            )
        ).all()

    def find_best(self, study_id: int, direction: Literal["minimize", "maximize"]) -> Trial | None:
        """The complete trial with the best value (lowest number on ties)."""
        value = Trial.value.asc() if direction == "minimize" else Trial.value.desc()
        return self._session.scalar(
            select(Trial)
            .options(_LISTED)
            .where(
                Trial.study_id == study_id,
                Trial.state == TrialState.COMPLETE,
                Trial.value.is_not(None),
            )
            .order_by(value, Trial.number)
            .limit(1)
        )

    def page_json_text(
        self,
        study_id: int,
        *,
        state: TrialState | None,
        sort: TrialSort,
        order: SortOrder,
        limit: int,
        offset: int,
        with_total: bool,
        problem: str | None = None,
    ) -> JsonTextPage:
        """A page for a caller that passes params and metrics on as JSON, in one round trip:
        rows of `JSON_TEXT_SCALARS` then params and metrics as their stored JSON text, the
        study's status and end time (a settled study's total may be known already), and the
        total if asked. By value, trials without one come last either way; ties by number."""
        statement = _json_text_page(state is not None, problem is not None, sort, order, with_total)
        values: dict[str, Any] = {"study_id": study_id, "limit": limit, "offset": offset}
        if state is not None:
            values["state"] = str(state)
        if problem is not None:
            values["problem"] = problem_pattern(problem)
        rows = self._session.execute(statement, values).all()
        if not rows:
            return JsonTextPage([], None, None, None)
        first = rows[0]._mapping
        return JsonTextPage(
            [row[: len(JSON_TEXT_SCALARS) + 2] for row in rows],
            int(first["_total"]) if with_total else None,
            first["_status"],
            first["_finished_at"],
        )

    def count(
        self, study_id: int, state: TrialState | None = None, problem: str | None = None
    ) -> int:
        filters = _study_filters(study_id, state)
        if problem is not None:
            filters.append(Trial.problem_labels.like(problem_pattern(problem)))
        statement = select(func.count()).select_from(Trial).where(*filters)
        return self._session.scalar(statement) or 0

    def export_rows(self, study_id: int) -> list[ExportRow]:
        """Every trial of a study, by number, with the columns an export shows."""
        rows = self._session.execute(
            select(
                Trial.number,
                Trial.state,
                Trial.value,
                Trial.params,
                Trial.metrics,
                Trial.epochs_run,
                Trial.best_epoch,
                Trial.diagnosis,
                Trial.duration_s,
                Trial.problems,
                Trial.confirmation,
            )
            .where(Trial.study_id == study_id)
            .order_by(Trial.number)
        ).all()
        return [ExportRow(*row) for row in rows]

    def duration_histogram(self, bounds: Sequence[float]) -> DurationHistogram:
        """Durations of finished trials, bucketed in the database (one scan, no rows loaded)."""
        finished = (Trial.finished_at.is_not(None), Trial.duration_s.is_not(None))
        buckets = [func.count(case((Trial.duration_s <= bound, 1))) for bound in bounds]
        row = self._session.execute(
            select(func.count(), func.coalesce(func.sum(Trial.duration_s), 0.0), *buckets).where(
                *finished
            )
        ).one()
        return DurationHistogram(
            bounds=tuple(bounds),
            cumulative_counts=tuple(int(n) for n in row[2:]),
            count=int(row[0]),
            total_s=float(row[1] or 0.0),
        )


def _study_filters(study_id: int, state: TrialState | None) -> list[ColumnElement[bool]]:
    filters = [Trial.study_id == study_id]
    if state is not None:
        filters.append(Trial.state == state)
    return filters


def problem_pattern(label: str) -> str:
    """LIKE pattern of a label in `problem_labels` (labels are [a-z_]: `_` is LIKE's one-char
    wildcard, which can only match what a real label would)."""
    return f"%,{label},%"


@functools.cache
def _json_text_page(
    by_state: bool, by_problem: bool, sort: TrialSort, order: SortOrder, with_total: bool
) -> Select[Any]:
    """The page statement of `page_json_text`, built once per shape with bound parameters: a
    Core select (no ORM row loading) whose SQL cache key is computed once, not per request."""
    trials, studies = _TRIALS.c, Study.__table__.c
    study_id = bindparam("study_id", type_=Integer)
    filters = [trials.study_id == study_id]
    if by_state:
        filters.append(trials.state == bindparam("state"))
    if by_problem:
        filters.append(trials.problem_labels.like(bindparam("problem")))
    if sort == "value":
        value = trials.value.asc() if order == "asc" else trials.value.desc()
        ordering = [value.nulls_last(), trials.number.asc()]
    else:
        ordering = [trials.number.asc() if order == "asc" else trials.number.desc()]
    columns: list[Any] = [
        *(trials[name] for name in JSON_TEXT_SCALARS),
        cast(trials.params, Text).label("params"),
        cast(trials.metrics, Text).label("metrics"),
        select(studies.status).where(studies.id == study_id).scalar_subquery().label("_status"),
        select(studies.finished_at)
        .where(studies.id == study_id)
        .scalar_subquery()
        .label("_finished_at"),
    ]
    if with_total:
        count = select(func.count()).select_from(_TRIALS).where(*filters)
        columns.append(count.scalar_subquery().label("_total"))
    return (
        select(*columns)
        .where(*filters)
        .order_by(*ordering)
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )

"""What the dashboard reads: studies with their progress, a study's trials as columns (for
plots of every trial at once), per-epoch values, a trial table filtered by diagnosis, and
parameter importances from Optuna's evaluators.

Columnar answers (one array per field, all of a study's trials) keep a 10,000-trial study's
plot data to one query and one compact JSON document.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import optuna
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from service.config import Settings
from service.db.models import StudyStatus, TrialState
from service.db.repositories import SortOrder, StudyRepository
from service.db.repositories._analysis import (
    AnalysisRepository,
    EpochMetric,
    SummaryRow,
    TableSort,
)
from service.queue.confirmation import CONFIRMATION_ATTR
from service.states import ENDED_TRIAL_STATES
from service.studies._optuna import optuna_storage
from service.studies._reads import reading
from service.studies.browse import find_study
from service.studies.columns import PLOT_DIGITS, coded, rounded
from service.studies.errors import NotFoundError
from service.studies.schemas import Page, StudyRead, TrialRead

logger = logging.getLogger(__name__)

MAX_INTERMEDIATE_TRIALS = 1_000
MAX_IMPORTANCE_TRIALS = 2_000
"""Importances are fitted on the latest complete trials, at most this many (a forest over
10,000 trials takes seconds, and says little more)."""

_FROZEN = ConfigDict(frozen=True)
ParamValue = str | float | int | bool | None

__all__ = [
    "MAX_IMPORTANCE_TRIALS",
    "MAX_INTERMEDIATE_TRIALS",
    "EpochMetric",
    "IntermediateValues",
    "ParamImportances",
    "StudyOverview",
    "StudySummary",
    "TableSort",
    "best_so_far",
    "get_intermediate_values",
    "get_param_importances",
    "get_study_summary",
    "list_diagnoses",
    "list_study_overviews",
    "list_trial_table",
]


class StudyOverview(StudyRead):
    """A study as the studies page lists it: with its trials counted by state."""

    trial_counts: dict[str, int] = Field(description="trials by state; every state is present")
    finished_trials: int = Field(description="complete, pruned or failed trials")


class StudySummary(BaseModel):
    """Every trial of a study, as columns: index i of each array is the i-th trial by number.

    Packed for whole studies (the dashboard reads 10,000 trials and more in one answer):
    `state`, `diagnosis` and every parameter whose values are strings hold indices into
    `labels["state"]`, `labels["diagnosis"]`, `labels["params.<name>"]`; floats carry six
    significant digits (durations four)."""

    model_config = _FROZEN

    study_id: int
    status: str
    direction: Literal["minimize", "maximize"]
    objective_metric: str
    n_trials: int
    trial_counts: dict[str, int]
    best_number: int | None = Field(description="the best complete trial's number")
    number: list[int]
    state: list[int | None] = Field(description='indices into labels["state"]')
    value: list[float | None] = Field(description="the objective (complete trials only)")
    best_so_far: list[float | None] = Field(
        description="the best objective among complete trials up to this one (by number)"
    )
    params: dict[str, list[ParamValue]] = Field(
        description="each parameter's value per trial (null where a trial has none); "
        'string-valued ones as indices into labels["params.<name>"]'
    )
    diagnosis: list[int | None] = Field(description='indices into labels["diagnosis"]')
    train_error: list[float | None] = Field(description="final train error (1 - accuracy)")
    val_error: list[float | None] = Field(description="final validation error")
    duration_s: list[float | None]
    labels: dict[str, list[str]] = Field(
        description='the values of the coded columns: "state", "diagnosis", "params.<name>"'
    )


class IntermediateValues(BaseModel):
    """The objective metric per epoch of the study's latest trials (pruned ones included)."""

    model_config = _FROZEN

    study_id: int
    metric: str
    total_trials: int = Field(description="trials in the study (the arrays hold the latest)")
    number: list[int]
    state: list[str]
    epoch: list[list[int]]
    value: list[list[float | None]]


class ParamImportances(BaseModel):
    """Optuna's importance of each parameter for the objective, most important first."""

    model_config = _FROZEN

    study_id: int
    evaluator: str
    n_trials: int = Field(description="complete trials the evaluator was fitted on")
    params: list[str]
    importances: list[float] = Field(description="same order as params; they sum to 1")
    note: str | None = Field(description="why there are none, when there are none")


def list_study_overviews(
    session: Session, *, status: StudyStatus | None, limit: int, offset: int
) -> Page[StudyOverview]:
    """A page of studies, newest first, with their trials counted by state (one GROUP BY)."""
    with reading(session):
        rows, total = StudyRepository(session).page(status=status, limit=limit, offset=offset)
        counts = AnalysisRepository(session).counts_by_study([row.id for row in rows])
        items = []
        for row in rows:
            by_state = {state.value: 0 for state in TrialState} | counts[row.id]
            items.append(
                StudyOverview.model_validate(
                    {
                        **StudyRead.model_validate(row).model_dump(),
                        "trial_counts": by_state,
                        "finished_trials": sum(by_state[state] for state in ENDED_TRIAL_STATES),
                    }
                )
            )
    return Page[StudyOverview](items=items, total=total, limit=limit, offset=offset)


def get_study_summary(session: Session, study_id: int) -> StudySummary:
    """Every trial of the study as columns, with the best value so far at each trial."""
    with reading(session):
        study = find_study(session, study_id)
        rows = AnalysisRepository(session).summary_rows(study_id)
        direction = cast(Literal["minimize", "maximize"], study.direction)
        header = {
            "study_id": study.id,
            "status": study.status,
            "direction": direction,
            "objective_metric": study.objective_metric,
            "n_trials": study.n_trials,
        }
    return _summary(header, rows, direction)


def _summary(
    header: dict[str, Any], rows: Sequence[SummaryRow], direction: Literal["minimize", "maximize"]
) -> StudySummary:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.params))
    counts = {state.value: 0 for state in TrialState}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    complete = TrialState.COMPLETE.value
    values = [_finite(row.value) if row.state == complete else None for row in rows]
    trajectory = best_so_far(values, direction)
    best_index = None
    if trajectory and trajectory[-1] is not None:
        best_index = values.index(trajectory[-1])
    labels: dict[str, list[str]] = {}
    states, labels["state"] = coded([row.state for row in rows])
    diagnoses, labels["diagnosis"] = coded([row.diagnosis for row in rows])
    params: dict[str, list[ParamValue]] = {}
    for name in sorted(names):
        column = [_param(row.params.get(name)) for row in rows]
        if all(value is None or isinstance(value, str) for value in column):
            codes, labels[f"params.{name}"] = coded(cast(list[str | None], column))
            params[name] = list(codes)
        else:
            params[name] = [
                float(f"{value:.{PLOT_DIGITS}g}") if isinstance(value, float) else value
                for value in column
            ]
    return StudySummary.model_construct(
        **header,
        trial_counts=counts,
        best_number=None if best_index is None else rows[best_index].number,
        number=[row.number for row in rows],
        state=states,
        value=rounded(values),
        best_so_far=rounded(trajectory),
        params=params,
        diagnosis=diagnoses,
        train_error=rounded(_error(row.metrics, "train") for row in rows),
        val_error=rounded(_error(row.metrics, "val") for row in rows),
        duration_s=rounded((_finite(row.duration_s) for row in rows), digits=4),
        labels=labels,
    )


def best_so_far(
    values: Sequence[float | None], direction: Literal["minimize", "maximize"]
) -> list[float | None]:
    """The running best of `values` (None: no value yet), lowest or highest by `direction`."""
    best: float | None = None
    trajectory: list[float | None] = []
    for value in values:
        if value is not None and (
            best is None or (value < best if direction == "minimize" else value > best)
        ):
            best = value
        trajectory.append(best)
    return trajectory


def get_intermediate_values(
    session: Session, study_id: int, *, latest: int = MAX_INTERMEDIATE_TRIALS
) -> IntermediateValues:
    """The study's objective metric at each epoch of its `latest` trials (highest numbers)."""
    with reading(session):
        study = find_study(session, study_id)
        metric = cast(EpochMetric, study.objective_metric)
        analysis = AnalysisRepository(session)
        rows = analysis.epoch_values(study_id, metric, latest=latest)
        total = sum(analysis.counts_by_study([study_id])[study_id].values())
    numbers: list[int] = []
    states: list[str] = []
    epochs: list[list[int]] = []
    values: list[list[float | None]] = []
    for row in rows:
        if not numbers or numbers[-1] != row.number:
            numbers.append(row.number)
            states.append(row.state)
            epochs.append([])
            values.append([])
        epochs[-1].append(row.epoch)
        values[-1].append(_finite(row.value))
    return IntermediateValues(
        study_id=study_id,
        metric=metric,
        total_trials=total,
        number=numbers,
        state=states,
        epoch=epochs,
        value=values,
    )


def list_trial_table(
    session: Session,
    study_id: int,
    *,
    states: Sequence[TrialState],
    diagnoses: Sequence[str | None],
    sort: TableSort,
    order: SortOrder,
    limit: int,
    offset: int,
    problem: str | None = None,
) -> Page[TrialRead]:
    """A page of the study's trials filtered by state, diagnosis (None: no diagnosis) and
    training problem."""
    with reading(session):
        rows, total = AnalysisRepository(session).table_page(
            study_id,
            states=[state.value for state in states],
            diagnoses=diagnoses,
            sort=sort,
            order=order,
            limit=limit,
            offset=offset,
            problem=problem,
        )
        if total == 0 and not StudyRepository(session).exists(study_id):
            raise NotFoundError(f"no study has id {study_id}")
        items = [TrialRead.model_validate(row) for row in rows]
    return Page[TrialRead](items=items, total=total, limit=limit, offset=offset)


def list_diagnoses(session: Session, study_id: int) -> list[str]:
    """The diagnosis labels the study's trials carry (for the table's filter)."""
    with reading(session):
        find_study(session, study_id)
        return AnalysisRepository(session).diagnoses(study_id)


def get_param_importances(
    session: Session,
    settings: Settings,
    study_id: int,
    *,
    max_trials: int = MAX_IMPORTANCE_TRIALS,
) -> ParamImportances:
    """Optuna's fANOVA importances (seeded, so repeatable) on the study's Optuna record, from
    its latest `max_trials` complete trials that are not confirmations. None yet (with a
    note) below two complete trials or when Optuna has no record of the study."""
    with reading(session):
        study = find_study(session, study_id)
        optuna_name = study.optuna_study_name
        complete = AnalysisRepository(session).counts_by_study([study_id])[study_id]
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    empty = {"study_id": study_id, "evaluator": "fanova", "params": [], "importances": []}
    if complete.get(TrialState.COMPLETE, 0) < 2:
        return ParamImportances(**empty, n_trials=0, note="needs two complete trials")
    trials, note = _optuna_trials(
        settings.effective_database_url, optuna_name, settings.db_prepared_statements
    )
    if note is not None:
        return ParamImportances(**empty, n_trials=0, note=note)
    # confirmations repeat the best configurations: fANOVA would weigh them more
    trials = [t for t in trials if not t.user_attrs.get(CONFIRMATION_ATTR)][-max_trials:]
    if len(trials) < 2:
        return ParamImportances(**empty, n_trials=len(trials), note="needs two complete trials")
    fitted = optuna.create_study(direction=_optuna_direction(study.direction))
    fitted.add_trials(trials)
    try:
        importances = optuna.importance.get_param_importances(fitted, evaluator=evaluator)
    except (RuntimeError, ValueError) as error:  # e.g. no parameter varies
        return ParamImportances(**empty, n_trials=len(trials), note=str(error))
    return ParamImportances(
        **(empty | {"params": list(importances), "importances": list(importances.values())}),
        n_trials=len(trials),
        note=None if importances else "no parameter is present in every complete trial",
    )


def _optuna_trials(
    storage_url: str, study_name: str, prepared_statements: bool = True
) -> tuple[list[optuna.trial.FrozenTrial], str | None]:
    """The Optuna study's complete trials with a finite value, or a note why there are none."""
    storage = optuna_storage(storage_url, prepared_statements)
    try:
        try:
            record = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            return [], "Optuna has no record of this study (no worker has run it)"
        trials = record.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    finally:
        storage.engine.dispose()  # a connection left in the pool is a ResourceWarning later
    return [t for t in trials if t.value is not None and math.isfinite(t.value)], None


def _optuna_direction(direction: str) -> optuna.study.StudyDirection:
    if direction == "maximize":
        return optuna.study.StudyDirection.MAXIMIZE
    return optuna.study.StudyDirection.MINIMIZE


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _param(value: Any) -> ParamValue:
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _error(metrics: Mapping[str, Any], split: str) -> float | None:
    """A split's final error: as recorded, else 1 - accuracy."""
    error = _finite(metrics.get(f"{split}_error"))
    if error is not None:
        return error
    accuracy = _finite(metrics.get(f"{split}_accuracy"))
    return None if accuracy is None else 1.0 - accuracy

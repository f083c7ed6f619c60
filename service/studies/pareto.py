"""A study's Pareto front: the complete trials no other complete trial dominates.

Written by hand (a dozen lines) because Optuna's front (`Study.best_trials`) needs the Optuna
study loaded from its storage, which the API does not read; our trials table holds every
trial's values. A single-objective study's front is its best trial(s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy.orm import Session

from service.db.models import Trial
from service.db.repositories import StudyRepository, TrialRepository
from service.studies._reads import reading
from service.studies.errors import NotFoundError
from service.studies.schemas import ObjectiveRead, ParetoFront, TrialRead
from service.studies.spec import ObjectiveSpec

Direction = Literal["minimize", "maximize"]


def pareto_front(session: Session, study_id: int) -> ParetoFront:
    with reading(session):
        study = StudyRepository(session).find(study_id)
        if study is None:
            raise NotFoundError(f"no study has id {study_id}")
        objectives = study_objectives(study.spec)
        complete = TrialRepository(session).complete(study_id)
        scored = [(trial, values) for trial in complete if (values := _values(trial, objectives))]
        front = non_dominated([values for _, values in scored], [o.direction for o in objectives])
        return ParetoFront(
            objectives=objectives,
            complete_trials=len(complete),
            trials=[TrialRead.model_validate(scored[index][0]) for index in front],
        )


def study_objectives(spec: dict[str, Any]) -> list[ObjectiveRead]:
    """The objectives of a stored spec, each with its resolved direction."""
    raw = spec.get("objective", {})
    entries = raw if isinstance(raw, list) else [raw]
    parsed = [ObjectiveSpec.model_validate(entry) for entry in entries]
    return [ObjectiveRead(metric=o.metric, direction=o.resolved_direction) for o in parsed]


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[Direction]) -> list[int]:
    """The indices of `points` that no other point dominates, in their order. A point
    dominates another when it is at least as good in every objective and better in one;
    equal points do not dominate each other (both stay)."""
    signs = [1.0 if direction == "minimize" else -1.0 for direction in directions]
    costs = [[sign * value for sign, value in zip(signs, point, strict=True)] for point in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return [
        index
        for index, cost in enumerate(costs)
        if not any(dominates(other, cost) for other in costs if other is not cost)
    ]


def _values(trial: Trial, objectives: Sequence[ObjectiveRead]) -> list[float] | None:
    """The trial's value per objective (None: it lacks one, or one is not finite)."""
    values = trial.objective_values if len(objectives) > 1 else [trial.value]
    if values is None or len(values) != len(objectives):
        return None
    if any(value is None or not math.isfinite(value) for value in values):
        return None
    return [float(value) for value in values if value is not None]

"""A study's confirmed best: the configuration with the best mean over its draws.

A study's best trial is its luckiest single draw. A study with `confirm` retrains its best
configurations with more seeds (`service.queue.confirmation`); this reads what that found.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from sqlalchemy.orm import Session

from service.db.models import Study
from service.db.repositories import TrialRepository
from service.queue.confirmation import ConfirmPlan, config_key
from service.studies.schemas import ConfirmedBest


def confirmed_best(
    draws: Iterable[tuple[int, Mapping[str, Any], float]],
    direction: Literal["minimize", "maximize"],
) -> ConfirmedBest | None:
    """Of the configurations with two or more complete draws (trial number, params, value),
    the one with the best mean; ties go to more draws, then to the earlier first draw."""
    grouped: dict[str, list[tuple[int, Mapping[str, Any], float]]] = {}
    for number, params, value in draws:
        if math.isfinite(value):
            grouped.setdefault(config_key(params), []).append((number, params, value))
    sign = 1.0 if direction == "minimize" else -1.0
    repeated = [group for group in grouped.values() if len(group) >= 2]
    if not repeated:
        return None
    group = min(
        repeated,
        key=lambda g: (sign * statistics.fmean(v for _, _, v in g), -len(g), g[0][0]),
    )
    values = [value for _, _, value in group]
    best_number = min(group, key=lambda draw: (sign * draw[2], draw[0]))[0]
    return ConfirmedBest(
        params=dict(group[0][1]),
        mean=statistics.fmean(values),
        stdev=statistics.stdev(values),
        values=values,
        trials=[number for number, _, _ in group],
        best_trial=best_number,
    )


def read_confirmed_best(session: Session, study: Study) -> ConfirmedBest | None:
    """`confirmed_best` of a study whose spec confirms (None for one that does not: a study
    without confirmations seldom trains one configuration twice)."""
    if ConfirmPlan.of(study.spec or {}) is None:
        return None
    direction: Literal["minimize", "maximize"] = (
        "maximize" if study.direction == "maximize" else "minimize"
    )
    return confirmed_best(TrialRepository(session).complete_draws(study.id), direction)

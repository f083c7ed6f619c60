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

Draw = tuple[int, Mapping[str, Any], float, bool]
"""A complete trial: its number, params, value and whether it is a confirmation."""


def confirmed_best(
    draws: Iterable[Draw],
    direction: Literal["minimize", "maximize"],
    diverged: Iterable[Mapping[str, Any]] = (),
) -> ConfirmedBest | None:
    """Of the configurations with two or more complete draws, the one with the best mean; ties
    go to more draws, then to the earlier first draw. A configuration that diverged on one of
    its seeds (`diverged`: the params of the study's diverged trials) is left out: its mean
    over the seeds that trained says nothing of the ones that blew up."""
    grouped: dict[str, list[Draw]] = {}
    for draw in draws:
        if math.isfinite(draw[2]):
            grouped.setdefault(config_key(draw[1]), []).append(draw)
    unstable = {config_key(params) for params in diverged} & grouped.keys()
    sign = 1.0 if direction == "minimize" else -1.0
    repeated = [group for key, group in grouped.items() if len(group) >= 2 and key not in unstable]
    if not repeated:
        return None
    group = min(
        repeated,
        key=lambda g: (sign * statistics.fmean(d[2] for d in g), -len(g), g[0][0]),
    )
    values = [draw[2] for draw in group]
    confirmations = [draw[2] for draw in group if draw[3]]
    best_number = min(group, key=lambda draw: (sign * draw[2], draw[0]))[0]
    return ConfirmedBest(
        params=dict(group[0][1]),
        mean=statistics.fmean(values),
        stdev=statistics.stdev(values),
        values=values,
        trials=[draw[0] for draw in group],
        best_trial=best_number,
        confirmations_mean=statistics.fmean(confirmations) if confirmations else None,
        diverged_left_out=len(unstable),
    )


def read_confirmed_best(session: Session, study: Study) -> ConfirmedBest | None:
    """`confirmed_best` of a study whose spec confirms, once a confirmation exists (None for
    one that does not: a study without confirmations seldom trains one configuration twice).
    A study detail reads it at every poll: during the search, one EXISTS instead of every
    complete trial's parameters."""
    trials = TrialRepository(session)
    if ConfirmPlan.of(study.spec or {}) is None or not trials.has_confirmations(study.id):
        return None
    direction: Literal["minimize", "maximize"] = (
        "maximize" if study.direction == "maximize" else "minimize"
    )
    return confirmed_best(
        trials.complete_draws(study.id), direction, trials.diverged_params(study.id)
    )

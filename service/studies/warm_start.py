"""Warm start: the finished trials of earlier studies seed a new study's sampler.

A source must have trained the same model on the same data for the same objective, with the
same fixed values and the same searched parameters (names and kinds): then its trials are
evidence about the new study's objective. Each complete trial is replayed through the new
search space (its conditions and ranges); one that falls outside is left out and said so.
The trials go into the new study's Optuna study before it is queued, so every sampler that
reads the history (TPE, GP, CMA-ES) starts from them; the worker runs the best of them as
the study's first trial (`service.worker.runner`). Where a source confirmed its best
(`confirm`), that best is its confirmed configuration, the best mean over several draws,
rather than its luckiest draw: the seed marked `first` names it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Study, Trial, TrialState
from service.db.repositories import TrialRepository
from service.queue.confirmation import ConfirmPlan
from service.studies.confirmed import confirmed_best
from service.studies.errors import InvalidInputError, Issue
from service.studies.spec import StudySpec
from trainer import SearchSpace

WARM_START_ATTR = "hpsearch_warm_start"
"""The Optuna user attribute of a seed trial: the source study and trial it came from, and
`first` on the one the new study runs first when a source's confirmed best chose it."""

MAX_SEED_TRIALS = 1000
"""Trials taken from all sources together (the newest first): beyond that a sampler's model
gains little, and each costs a few writes at submit."""

_COMPARED = (
    ("dataset", "trained on other data (its dataset differs)"),
    ("model", "trained another model (its model differs)"),
    ("fixed", "fixed other values (its fixed values differ)"),
    ("loss", "trained with another loss"),
)


@dataclass
class WarmStart:
    trials: list[FrozenTrial] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    first: FrozenTrial | None = None
    """The seed of the best confirmed configuration among the sources (None: none confirmed,
    and the study runs the sources' best draw first)."""


@dataclass(frozen=True)
class _Confirmed:
    mean: float
    draws: int
    seed: FrozenTrial


def prepare_warm_start(session: Session, spec: StudySpec) -> WarmStart:
    """The source trials of `spec.warm_start`, as Optuna trials of the new search space;
    `InvalidInputError` (nothing stored) naming each source that cannot seed this study."""
    assert spec.warm_start is not None
    issues: list[Issue] = []
    warm = WarmStart()
    ours = spec.model_dump(mode="json")
    sign = 1.0 if spec.primary.resolved_direction == "minimize" else -1.0
    confirmed: list[tuple[int, _Confirmed]] = []
    for index, source_id in enumerate(spec.warm_start.studies):
        at = ("warm_start", "studies", index)
        if source_id in spec.warm_start.studies[:index]:
            issues.append(Issue(at, f"study {source_id} is listed twice"))
            continue
        source = session.get(Study, source_id)
        if source is None:
            issues.append(Issue(at, f"no study has id {source_id}", "not_found"))
            continue
        why = _incompatibility(ours, spec, source)
        if why is not None:
            issues.append(Issue(at, f"study {source_id} {why}, so its trials cannot seed this one"))
            continue
        rows = session.execute(
            select(Trial.number, Trial.params, Trial.value, Trial.confirmation)
            .where(
                Trial.study_id == source_id,
                Trial.state == TrialState.COMPLETE,
                Trial.value.is_not(None),
            )
            .order_by(Trial.number.desc())
        ).all()
        taken = [
            trial
            for number, params, value, _ in rows
            if (trial := replayed(spec.search_space, params or {}, value, source_id, number))
            is not None
        ]
        if not taken:
            issues.append(
                Issue(
                    at,
                    f"study {source_id} has no complete trial within this study's search space",
                )
            )
            continue
        if len(taken) < len(rows):
            warm.notes.append(
                f"warm start: {len(rows) - len(taken)} of study {source_id}'s {len(rows)} "
                "complete trials fall outside this search space and do not seed it"
            )
        warm.trials += taken
        if (best := _confirmed_seed(session, spec, source, rows, taken)) is not None:
            confirmed.append((source_id, best))
    if issues:
        raise InvalidInputError(issues)
    if confirmed:
        source_id, best = min(confirmed, key=lambda item: sign * item[1].mean)
        warm.first = best.seed
        best.seed.set_user_attr(
            WARM_START_ATTR, {**best.seed.user_attrs[WARM_START_ATTR], "first": True}
        )
        warm.notes.append(
            f"warm start: the first trial runs study {source_id}'s confirmed best (mean "
            f"{best.mean:.4g} over {best.draws} draws), not the sources' best single draw"
        )
    if len(warm.trials) > MAX_SEED_TRIALS:
        warm.notes.append(
            f"warm start: the newest {MAX_SEED_TRIALS} of {len(warm.trials)} source trials "
            "seed the sampler"
        )
        kept = warm.trials[:MAX_SEED_TRIALS]
        if warm.first is not None and warm.first not in kept:
            kept[-1] = warm.first
        warm.trials = kept
    return warm


def _confirmed_seed(
    session: Session,
    spec: StudySpec,
    source: Study,
    rows: Sequence[tuple[int, Any, float, bool]],
    taken: Sequence[FrozenTrial],
) -> _Confirmed | None:
    """A confirming source's confirmed best, as its seed within this study's space (None when
    the source confirmed nothing, or its confirmed configuration falls outside the space)."""
    if ConfirmPlan.of(source.spec or {}) is None or not any(row[3] for row in rows):
        return None
    best = confirmed_best(
        sorted((number, params or {}, value, bool(flag)) for number, params, value, flag in rows),
        spec.primary.resolved_direction,
        TrialRepository(session).diverged_params(source.id),
    )
    if best is None:
        return None
    for seed in taken:
        if seed.user_attrs[WARM_START_ATTR]["trial"] == best.best_trial:
            return _Confirmed(best.mean, len(best.values), seed)
    return None


def _incompatibility(ours: dict[str, Any], spec: StudySpec, source: Study) -> str | None:
    """Why `source` cannot seed a study of `spec` (None: it can)."""
    try:  # its spec as this version of hpsearch reads it, defaults included
        theirs = StudySpec.model_validate(source.spec).model_dump(mode="json")
    except (ValidationError, ValueError) as error:
        return f"has a spec this server no longer accepts ({error})"
    for key, why in _COMPARED:
        if theirs.get(key) != ours.get(key):
            return why
    metric = spec.primary.metric
    if source.objective_metric != metric or source.direction != spec.primary.resolved_direction:
        return (
            f"optimized {source.direction} {source.objective_metric}, this study "
            f"{spec.primary.resolved_direction} {metric}"
        )
    their_space, our_space = theirs["search_space"], ours["search_space"]
    for name in our_space:
        if name not in their_space:
            return f"does not search {name!r}"
    for name in their_space:
        if name not in our_space:
            return f"searches {name!r}, which this study does not"
        if their_space[name].get("type") != our_space[name].get("type"):
            return (
                f"searches {name!r} as {their_space[name].get('type')}, this study as "
                f"{our_space[name].get('type')}"
            )
    return None


def replayed(
    space: SearchSpace, params: dict[str, Any], value: float, study_id: int, number: int
) -> FrozenTrial | None:
    """An earlier trial as a complete Optuna trial of `space`, or None when it does not fit:
    a parameter out of range or not a choice, one missing, or one the space would not ask
    for (another conditional branch)."""
    if not math.isfinite(value):
        return None
    replay = _Replay(params)
    try:
        values = space.sample(replay)
        if set(values) != set(params):
            return None
        return optuna.trial.create_trial(
            params=values,
            distributions=replay.distributions,
            value=value,
            user_attrs={WARM_START_ATTR: {"study_id": study_id, "trial": number}},
        )
    except (_MisfitError, ValueError):
        return None


class _MisfitError(Exception):
    """The earlier trial has no value for a parameter the space asks for."""


class _Replay:
    """A `Suggester` answering with an earlier trial's values, noting each distribution."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.distributions: dict[str, BaseDistribution] = {}

    def _take(self, name: str, distribution: BaseDistribution) -> Any:
        if name not in self.params:
            raise _MisfitError(name)
        self.distributions[name] = distribution
        return self.params[name]

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        value: float = self._take(name, FloatDistribution(low, high, log=log, step=step))
        return value

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        value: int = self._take(name, IntDistribution(low, high, log=log, step=step))
        return value

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._take(name, CategoricalDistribution(list(choices)))

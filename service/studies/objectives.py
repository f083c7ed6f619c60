"""A trial's value per objective of a multi-objective study, from its result.

The first objective is the trainer's (`TrialResult.objective_value`, measured on the trained
model as the study's single objective is). The later ones: an epoch metric as the same final
evaluation measured it (`loss` on the training split, `val_loss` on the validation split), the
network's trainable parameters, or the seconds per epoch this run trained.
"""

from __future__ import annotations

import math

from service.studies.spec import ObjectiveSpec, StudySpec
from trainer import TrialResult


class MissingObjectiveError(ValueError):
    """The trial has no finite value for one of its study's objectives."""


def objective_values(spec: StudySpec, result: TrialResult) -> list[float]:
    """One value per objective of `spec`, the first first (`MissingObjectiveError` names the
    one the result has none of)."""
    values = [result.objective_value, *(_later(o, result) for o in spec.objectives[1:])]
    for objective, value in zip(spec.objectives, values, strict=True):
        if value is None or not math.isfinite(value):
            raise MissingObjectiveError(f"the trial has no finite {objective.metric}")
    return [float(value) for value in values if value is not None]


def _later(objective: ObjectiveSpec, result: TrialResult) -> float | None:
    metric = objective.metric
    if metric == "n_parameters":
        return None if result.n_parameters is None else float(result.n_parameters)
    if metric == "epoch_time_s":
        trained = result.epochs_run - (result.resumed_from_epoch or 0)
        return result.wall_time_s / max(trained, 1)
    key = metric if metric.startswith("val_") else f"train_{metric}"
    return result.split_metrics().get(key)

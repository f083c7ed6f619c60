"""Retrain a study's best configuration with k training seeds, here, with the trainer.

The search's best value is the best of many tries, so it flatters the configuration; training
the same configuration again with several seeds gives an honest value and its noise. Only the
training seed varies (initialization, dropout, batch order): the data set's split seed is part
of the configuration, so every run sees the same data and the same data fingerprint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from service.gate.errors import GateError
from service.gate.measurement import Measurement, SeedRun, StudySource, package_versions
from service.studies.objectives import MissingObjectiveError, objective_values
from service.studies.spec import StudySpec, UploadedDataset

FINISHED = ("completed", "cancelled")


def best_params(study: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of a finished study's best configuration: its confirmed best where it
    confirmed one (spec.confirm: the best mean over several seeds), else its best trial's; a
    GateError if it has none."""
    label = f"study {study.get('id')} '{study.get('name')}'"
    status = study.get("status")
    if status == "failed":
        raise GateError(f"{label} failed: {study.get('error') or 'no reason recorded'}")
    if status not in FINISHED:
        raise GateError(f"{label} is {status}, not finished; wait for it to end")
    best = study.get("confirmed_best") or study.get("best_trial")
    if not best:
        raise GateError(f"{label} has no completed trial to compare")
    params: dict[str, Any] = best.get("params") or {}
    return params


def measure(
    study: Mapping[str, Any],
    seeds: Sequence[int],
    *,
    device: str = "auto",
    server: str | None = None,
    on_run: Callable[[SeedRun], None] | None = None,
) -> Measurement:
    """Retrain the best configuration of `study` (a study detail from the REST API) once per
    seed, and record the results."""
    from trainer import DatasetError, run_trial

    params = best_params(study)
    try:
        spec = StudySpec.model_validate(study["spec"])
    except (KeyError, ValidationError, ValueError) as error:
        raise GateError(f"study {study.get('id')}: its spec no longer validates: {error}") from None
    if isinstance(spec.dataset, UploadedDataset):
        raise GateError(
            f"study {study.get('id')} trains on uploaded data set {spec.dataset.id}, which the "
            "gate cannot retrain locally; use a built-in data set (digits, synthetic)"
        )
    try:
        config = spec.template().config_for(params)
    except ValueError as error:
        raise GateError(
            f"study {study.get('id')}: its best parameters are invalid: {error}"
        ) from None
    runs: list[SeedRun] = []
    fingerprints: set[str] = set()
    devices: set[str] = set()
    for seed in seeds:
        try:
            result = run_trial(dataclasses.replace(config, seed=seed), device=device)
        except DatasetError as error:
            raise GateError(f"bad data set: {error}") from None
        metrics: dict[str, float | None] = dict(result.split_metrics())
        values: list[float] | None = None
        if spec.multi_objective and result.status == "completed":
            try:
                values = objective_values(spec, result)
            except MissingObjectiveError:
                values = None
        run = SeedRun(
            seed=seed,
            objective_value=result.objective_value,
            metrics=metrics,
            status=result.status,
            objective_values=values,
        )
        runs.append(run)
        fingerprints.add(result.data_fingerprint)
        devices.add(result.device)
        if on_run is not None:
            on_run(run)
    trial_config = config.to_dict()
    trial_config.pop("seed", None)
    confirmed = study.get("confirmed_best")
    return Measurement(
        source=StudySource(
            study_id=study.get("id"),
            study_name=study.get("name"),
            server=server,
            best_trial_number=(
                confirmed["best_trial"] if confirmed else study["best_trial"].get("number")
            ),
            study_best_value=study.get("best_value"),
            confirmed_mean=confirmed["mean"] if confirmed else None,
        ),
        objective_metric=spec.primary.metric,
        direction=spec.primary.resolved_direction,
        objectives=[o.metric for o in spec.objectives] if spec.multi_objective else [],
        best_params=params,
        trial_config=trial_config,
        runs=runs,
        packages=package_versions(),
        data_fingerprint=",".join(sorted(fingerprints)),
        device=",".join(sorted(devices)),
    )


def seeds_for(k: int, baseline: Measurement | None = None, first: int = 0) -> list[int]:
    """k training seeds: the baseline's own (paired runs: the same seeds on both sides), then
    the integers after them; without a baseline, `first`, `first + 1`, ..."""
    seeds = list(baseline.seeds[:k]) if baseline is not None else []
    following = max(seeds) + 1 if seeds else first
    while len(seeds) < k:
        if following not in seeds:
            seeds.append(following)
        following += 1
    return seeds

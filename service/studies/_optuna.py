"""What the API side does with Optuna: seed a warm-started study, forget a deleted one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import optuna
from optuna.trial import FrozenTrial


def seed_optuna_study(
    study_name: str,
    storage_url: str,
    direction: Literal["minimize", "maximize"],
    trials: Sequence[FrozenTrial],
) -> None:
    """Create Optuna's study `study_name` holding `trials` (a warm start's), before the
    study is queued: the first worker loads it instead of creating it empty."""
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, direction=direction)
        study.add_trials(trials)
    finally:
        storage.engine.dispose()


def delete_optuna_study(study_name: str, storage_url: str) -> bool:
    """Delete Optuna's study `study_name`; False when Optuna never created it."""
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        optuna.delete_study(study_name=study_name, storage=storage)
    except KeyError:
        return False
    finally:
        storage.engine.dispose()
    return True

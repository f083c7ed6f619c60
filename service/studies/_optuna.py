"""What the API side does with Optuna: seed a warm-started study, forget a deleted one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from service.db.engine import postgres_connect_args


def optuna_storage(storage_url: str, prepared_statements: bool = True) -> RDBStorage:
    """Optuna's storage on our database, connected as our engines are."""
    connect_args = postgres_connect_args(storage_url, prepared_statements)
    return RDBStorage(
        storage_url, engine_kwargs={"connect_args": connect_args} if connect_args else None
    )


def seed_optuna_study(
    study_name: str,
    storage_url: str,
    direction: Literal["minimize", "maximize"],
    trials: Sequence[FrozenTrial],
    prepared_statements: bool = True,
) -> None:
    """Create Optuna's study `study_name` holding `trials` (a warm start's), before the
    study is queued: the first worker loads it instead of creating it empty."""
    storage = optuna_storage(storage_url, prepared_statements)
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, direction=direction)
        study.add_trials(trials)
    finally:
        storage.engine.dispose()


def delete_optuna_study(
    study_name: str, storage_url: str, prepared_statements: bool = True
) -> bool:
    """Delete Optuna's study `study_name`; False when Optuna never created it."""
    storage = optuna_storage(storage_url, prepared_statements)
    try:
        optuna.delete_study(study_name=study_name, storage=storage)
    except KeyError:
        return False
    finally:
        storage.engine.dispose()
    return True

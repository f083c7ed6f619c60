"""The one thing the API side does with Optuna: forget a deleted study's Optuna record."""

from __future__ import annotations

import optuna


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

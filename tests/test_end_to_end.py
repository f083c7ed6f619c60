"""Submit over REST, a worker process runs the study, results read back over REST and Optuna."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from service.api.app import create_app
from service.config import Settings
from tests.api_fixtures import TestClient

pytestmark = pytest.mark.slow

TOKEN = "end-to-end-token"


def test_rest_to_worker_to_rest_and_optuna(migrated_database_url: str, tmp_path: Path) -> None:
    url = migrated_database_url
    settings = Settings(database_url=url, data_dir=tmp_path, api_token=TOKEN)
    spec = {
        "name": "e2e",
        "dataset": {"name": "synthetic", "n_samples": 300, "n_features": 8, "n_classes": 3},
        "model": {"hidden_units": [16]},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]},
            "momentum": {
                "type": "float",
                "low": 0.5,
                "high": 0.95,
                "when": {"optimizer": ["momentum"]},
            },
            "learning_rate": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
        },
        "sampler": {"name": "tpe", "seed": 3},
        "budget": {"n_trials": 4, "max_epochs": 3},
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(settings)) as client:
        created = client.post("/api/v1/studies", json=spec, headers=headers)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]

        worker = subprocess.run(
            [sys.executable, "-m", "service.worker", "--device", "cpu", "--exit-when-idle"],
            env={**os.environ, "HPS_DATABASE_URL": url, "HPS_DATA_DIR": str(tmp_path)},
            capture_output=True,
            timeout=300,
        )
        assert worker.returncode == 0, worker.stderr.decode()[-3000:]

        study = client.get(f"/api/v1/studies/{study_id}", headers=headers).json()
        trials = client.get(
            f"/api/v1/studies/{study_id}/trials", params={"limit": 50}, headers=headers
        ).json()["items"]
        detail = client.get(f"/api/v1/studies/{study_id}/trials/0", headers=headers).json()
        checkpoint = client.get(f"/api/v1/studies/{study_id}/trials/0/checkpoint", headers=headers)

    assert study["status"] == "completed"
    assert study["trial_counts"]["complete"] + study["trial_counts"]["pruned"] == 4
    assert len(trials) == 4
    assert len(detail["epochs"]) == detail["epochs_run"] > 0
    assert checkpoint.status_code == 200
    assert len(checkpoint.content) > 1000
    for trial in trials:  # conditional parameter: momentum only with the momentum optimizer
        assert ("momentum" in trial["params"]) == (trial["params"]["optimizer"] == "momentum")

    storage = optuna.storages.RDBStorage(url)
    try:
        optuna_study = optuna.load_study(study_name=study["optuna_study_name"], storage=storage)
        by_number = {t.number: t for t in optuna_study.trials}
    finally:
        storage.engine.dispose()
    assert len(by_number) == 4
    completed = [t for t in trials if t["state"] == "complete"]
    for trial in completed:
        frozen = next(f for f in by_number.values() if f.params == trial["params"])
        assert frozen.value == pytest.approx(trial["value"])
    best = min(completed, key=lambda t: t["value"])
    assert study["best_value"] == pytest.approx(best["value"])

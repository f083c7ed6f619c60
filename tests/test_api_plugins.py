"""Plugins over REST: GET /plugins, the 422s a spec naming a plugin can get, and a study of the
example plugin package run end to end by a worker process (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.api import create_app
from tests.api_fixtures import AUTH, TestClient, make_settings
from tests.test_plugins import example_plugins_installed
from trainer import plugins

pytest_plugins = ["tests.api_fixtures"]

EXAMPLE_DISTRIBUTION = "hpsearch-examples"


def example_version() -> str:
    """The installed example package's version, as its metadata (not the code) says."""
    from importlib.metadata import version

    return version(EXAMPLE_DISTRIBUTION)


@pytest.fixture(autouse=True)
def _examples() -> None:
    from tests.conftest import require

    require(
        example_plugins_installed(),
        "the example plugins are not installed (pip install -e examples/plugins)",
    )


@pytest.fixture(autouse=True)
def _every_plugin_afterwards() -> Any:
    yield
    plugins.activate(None)


def plugin_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "own-model",
        "dataset": {"name": "diabetes", "config": {"n_samples": 200}},
        "model": {"type": "resmlp", "config": {"width": 16, "blocks": 1}},
        "objective": {"metric": "val_mae"},
        "search_space": {
            "initializer": {"type": "categorical", "choices": ["he_normal", "glorot_uniform"]},
            "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.3},
            "model.blocks": {"type": "int", "low": 1, "high": 2},
        },
        "budget": {"n_trials": 3, "max_epochs": 4},
    }
    spec.update(overrides)
    return spec


def test_plugins_lists_each_with_distribution_version_and_schema(client: TestClient) -> None:
    response = client.get("/api/v1/plugins")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["allow_list"] is None
    by_name = {p["name"]: p for p in body["plugins"]}
    resmlp = by_name["resmlp"]
    assert (resmlp["group"], resmlp["kind"], resmlp["status"]) == (
        "hpsearch.models",
        "model",
        "loaded",
    )
    assert resmlp["distribution"] == EXAMPLE_DISTRIBUTION
    assert resmlp["version"] == example_version()
    assert resmlp["value"] == "hpsearch_examples.models:build_resmlp"
    assert set(resmlp["config_schema"]["properties"]) == {
        "width",
        "blocks",
        "activation",
        "dropout",
    }
    assert by_name["diabetes"]["kind"] == "dataset"


def test_a_spec_with_a_plugin_model_and_dataset_is_accepted(client: TestClient) -> None:
    response = client.post("/api/v1/studies", json=plugin_spec())
    assert response.status_code == 201, response.text
    stored = client.get(f"/api/v1/studies/{response.json()['id']}").json()["spec"]
    assert stored["model"] == {
        "type": "resmlp",
        "config": {"width": 16, "blocks": 1, "activation": "relu", "dropout": 0.0},
    }


@pytest.mark.parametrize(
    ("changes", "loc", "message"),
    [
        pytest.param(
            {"model": {"type": "resnet50"}},
            ["body", "model", "type"],
            "unknown model 'resnet50'; known: cnn, mlp, resmlp",
            id="unknown-model",
        ),
        pytest.param(
            {"dataset": {"name": "imagenet"}},
            ["body", "dataset", "name"],
            "unknown dataset 'imagenet'; known:",
            id="unknown-dataset",
        ),
        pytest.param(
            {"model": {"type": "resmlp", "config": {"width": 0}}},
            ["body", "model", "config", "width"],
            "model 'resmlp': Input should be greater than or equal to 1",
            id="bad-config",
        ),
        pytest.param(
            {"model": {"type": "resmlp", "config": {"depth": 3}}},
            ["body", "model", "config", "depth"],
            "Extra inputs are not permitted",
            id="unknown-config-key",
        ),
        pytest.param(
            {"objective": {"metric": "val_accuracy"}},
            ["body", "objective", "metric"],
            "'val_accuracy' is not a metric of a regression task",
            id="classification-metric",
        ),
        pytest.param(
            {
                "search_space": {
                    "model.activation": {"type": "categorical", "choices": ["relu", "swish"]}
                }
            },
            ["body", "search_space", "model.activation"],
            "Input should be 'relu', 'tanh' or 'gelu'",
            id="bad-plugin-parameter",
        ),
        pytest.param(
            {"search_space": {"units": {"type": "int", "low": 8, "high": 32}}},
            ["body", "search_space", "units"],
            "Extra inputs are not permitted",
            id="shape-parameter-the-plugin-lacks",
        ),
    ],
)
def test_bad_plugin_specs_get_a_422_at_their_json_path(
    client: TestClient, changes: dict[str, Any], loc: list[Any], message: str
) -> None:
    response = client.post("/api/v1/studies", json=plugin_spec(**changes))
    assert response.status_code == 422, response.text
    details = response.json()["detail"]
    assert any(d["loc"] == loc and message in d["msg"] for d in details), details
    assert client.get("/api/v1/studies").json()["total"] == 0  # nothing stored


def test_a_plugin_outside_the_allow_list_is_refused_with_the_reason(
    migrated_database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(migrated_database_url, tmp_path / "data", plugins="resmlp")
    with TestClient(create_app(settings), headers=AUTH) as client:
        listed = {p["name"]: p["status"] for p in client.get("/api/v1/plugins").json()["plugins"]}
        response = client.post("/api/v1/studies", json=plugin_spec())
    assert listed == {
        "resmlp": "loaded",
        "diabetes": "not_allowed",
        "diabetes_streamed": "not_allowed",
    }
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "dataset", "name"]
    assert "not in this server's plugin allow-list HPS_PLUGINS" in detail["msg"]


@pytest.mark.slow
def test_a_plugin_study_runs_end_to_end(migrated_database_url: str, tmp_path: Path) -> None:
    settings = make_settings(migrated_database_url, tmp_path)
    with TestClient(create_app(settings), headers=AUTH) as client:
        created = client.post("/api/v1/studies", json=plugin_spec())
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        worker = subprocess.run(
            [sys.executable, "-m", "service.worker", "--device", "cpu", "--exit-when-idle"],
            env={
                **os.environ,
                "HPS_DATABASE_URL": migrated_database_url,
                "HPS_DATA_DIR": str(tmp_path),
            },
            capture_output=True,
            timeout=300,
        )
        assert worker.returncode == 0, worker.stderr.decode()[-3000:]
        study = client.get(f"/api/v1/studies/{study_id}").json()
        trials = client.get(f"/api/v1/studies/{study_id}/trials").json()["items"]
        detail = client.get(f"/api/v1/studies/{study_id}/trials/{trials[0]['number']}").json()

    assert study["status"] == "completed", study
    assert len(trials) == 3
    finished = [t for t in trials if t["state"] in ("complete", "pruned")]
    assert len(finished) == 3, [t.get("error") for t in trials]
    assert all({"model.blocks", "dropout", "initializer"} <= set(t["params"]) for t in trials)
    assert detail["plugin_versions"] == {EXAMPLE_DISTRIBUTION: example_version()}
    metrics = detail["metrics"]
    assert "val_mae" in metrics
    assert "val_accuracy" not in metrics
    assert metrics["val_error"] >= 0  # MSE / the train targets' variance
    epochs = detail["epochs"]
    assert epochs
    assert all(e["mae"] is not None and e["accuracy"] is None for e in epochs)
    assert detail["value"] == pytest.approx(metrics["val_mae"])

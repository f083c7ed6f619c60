"""Fixtures for the API tests: an app over a migrated database (SQLite and PostgreSQL), a
client holding a valid token, and direct seeding of studies and trials (workers fill them in
production; the API only reads them).

Test modules load the fixtures with `pytest_plugins = ["tests.api_fixtures"]` and import the
helpers from here too; the module holds no assertions, so it opts out of assertion rewriting
(PYTEST_DONT_REWRITE), which pytest could not apply to a module imported before it loads it.
"""

from __future__ import annotations

import socket
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.api import create_app
from service.config import Settings
from service.db.engine import create_db_engine, make_session_factory, transaction
from service.db.models import Study, StudyStatus, Trial, TrialEpoch, TrialState, utcnow

with warnings.catch_warnings():
    # Starlette 1.x asks for `httpx2` behind its TestClient and warns, once at import, when it
    # finds `httpx` instead. httpx is what the dev dependencies install; nothing else is hidden.
    warnings.filterwarnings(
        "ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated"
    )
    from fastapi.testclient import TestClient as _StarletteTestClient


class TestClient(_StarletteTestClient):
    """Starlette's TestClient, addressed as a loopback server is (`http://127.0.0.1`): a
    server bound to loopback answers only loopback host names (`Settings.host_names`), and
    the client's own default, `testserver`, is none."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, app: Any, base_url: str = "http://127.0.0.1", **options: Any) -> None:
        super().__init__(app, base_url=base_url, **options)


__all__ = ["TOKEN", "TestClient", "make_settings", "seed_study", "seed_trial", "valid_spec"]

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    """A TCP port nothing listens on now (for a real server in a test)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def make_settings(database_url: str | None, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "api_token": TOKEN,
        **overrides,
    }
    return Settings(**values)


def valid_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "lr-search",
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
            "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
        },
        "budget": {"n_trials": 10, "max_epochs": 5},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def api_settings(migrated_database_url: str, tmp_path: Path) -> Settings:
    return make_settings(migrated_database_url, tmp_path / "data")


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    """A started app (lifespan run) whose requests carry a valid token."""
    with TestClient(create_app(api_settings), headers=AUTH) as test_client:
        yield test_client


@pytest.fixture
def anonymous(client: TestClient) -> TestClient:
    """The same app, without the token."""
    return TestClient(client.app)


@pytest.fixture
def db(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test database, for seeding and for looking behind the API."""
    engine = create_db_engine(migrated_database_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def seed_study(db: sessionmaker[Session], **overrides: Any) -> int:
    values: dict[str, Any] = {
        "name": "seeded",
        "spec": valid_spec(),
        "status": StudyStatus.QUEUED.value,
        "direction": "minimize",
        "objective_metric": "val_loss",
        "n_trials": 10,
        "optuna_study_name": f"hps-{uuid.uuid4().hex}",
        **overrides,
    }
    with transaction(db) as session:
        study = Study(**values)
        session.add(study)
        session.flush()
        return study.id


def seed_trial(
    db: sessionmaker[Session],
    study_id: int,
    number: int,
    *,
    epochs: int = 0,
    regression: bool = False,
    **overrides: Any,
) -> int:
    """A trial (complete by default) with `epochs` rows of learning curve (accuracy, or mae
    for a regression trial)."""
    values: dict[str, Any] = {
        "study_id": study_id,
        "number": number,
        "state": TrialState.COMPLETE.value,
        "params": {"optimizer": "adam", "learning_rate": 0.01},
        "value": 1.0 / (number + 1),
        "metrics": {"train": {"loss": 0.5, "accuracy": 0.8}, "val": {"loss": 0.6}},
        "epochs_run": epochs,
        "duration_s": 2.5,
        "finished_at": utcnow(),
        **overrides,
    }
    with transaction(db) as session:
        trial = Trial(**values)
        session.add(trial)
        session.flush()
        for epoch in range(1, epochs + 1):
            session.add(
                TrialEpoch(
                    trial_id=trial.id,
                    epoch=epoch,
                    loss=1.0 / epoch,
                    accuracy=None if regression else 0.5,
                    val_loss=1.5 / epoch,
                    val_accuracy=None if regression else 0.4,
                    mae=0.8 / epoch if regression else None,
                    val_mae=0.9 / epoch if regression else None,
                    data_loss=0.9 / epoch,
                    val_data_loss=1.2 / epoch,
                    kernel_grad_norms=[0.5 / epoch, 0.1 / epoch],
                    lr=0.01,
                )
            )
        return trial.id


@pytest.fixture
def server_settings(migrated_database_url: str, tmp_path: Path) -> Settings:
    """Settings of a real server over the test database, on a free port."""
    return make_settings(migrated_database_url, tmp_path / "data", port=free_port())


@pytest.fixture
def url(server_settings: Settings) -> Iterator[str]:
    """The base URL of a real server (uvicorn in a thread) over the test database."""
    from service.stack import BackgroundServer

    server = BackgroundServer(server_settings)
    server.start()
    try:
        yield f"http://127.0.0.1:{server_settings.port}"
    finally:
        server.stop()

"""Shared test set-up: components that may be absent skip with a reason, except under CI.

Under CI (`CI=true`) `.ci/run` brings every component up, so a would-be skip is a failure: a
green CI run can never hide a test that did not run. GPU tests are the exception: CI has no GPU.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import torch
from sqlalchemy.engine import make_url

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(available: bool, reason: str) -> None:
    """Skip the calling test when a component is missing; fail instead under CI."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run must provide it, so this is a failure)")
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# --- databases: every database test runs on SQLite and on PostgreSQL --------------------------

POSTGRES_SERVER = os.environ.get(
    "HPS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@functools.cache
def postgres_reachable() -> bool:
    try:
        with psycopg.connect(_libpq(POSTGRES_SERVER), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    require(postgres_reachable(), f"no PostgreSQL server at {POSTGRES_SERVER}")
    name = f"hps_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(POSTGRES_SERVER), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(POSTGRES_SERVER), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, once SQLite (a file) and once PostgreSQL (a fresh database)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hps.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


def create_schema(url: str) -> None:
    """Bring an empty database to the current schema: Alembic's migrations once they exist."""
    try:
        from service.db.migrate import upgrade
    except ImportError:  # before migrations land: the ORM's tables
        from service.db.engine import create_db_engine
        from service.db.models import Base

        engine = create_db_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        return
    upgrade(url)


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """`database_url` with hpsearch's schema in place (SQLite and PostgreSQL)."""
    create_schema(database_url)
    return database_url

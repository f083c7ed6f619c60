"""The schema state at start and in /healthz: an empty, old or newer database is named in one
line with the command to run, the server and workers stop on it, and no request gets a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from service.api import create_app
from service.cli import app as cli
from service.config import get_settings
from service.db import migrate
from service.db.engine import create_db_engine
from service.db.schema import SchemaError, expected_revision, require_current_schema, schema_state
from service.worker.__main__ import main as worker_main
from tests.api_fixtures import AUTH, TestClient, make_settings, valid_spec

pytest_plugins = ["tests.api_fixtures"]


def set_revision(url: str, revision: str) -> None:
    engine = create_db_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE hps_alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def test_each_schema_state_is_told_with_what_to_run(database_url: str) -> None:
    empty = schema_state(database_url)
    assert (empty.status, empty.found, empty.expected) == ("missing", None, expected_revision())
    assert "no hpsearch schema" in str(empty.problem())
    assert "hpsearch db upgrade" in str(empty.problem())
    migrate.upgrade(database_url, "0001")
    old = schema_state(database_url)
    assert (old.status, old.found) == ("behind", "0001")
    assert f"at revision 0001, this hpsearch expects {expected_revision()}" in str(old.problem())
    migrate.upgrade(database_url)
    assert schema_state(database_url).status == "current"
    assert schema_state(database_url).problem() is None
    set_revision(database_url, "9999_from_the_future")
    newer = schema_state(database_url)
    assert newer.status == "ahead"
    assert "migrated by a newer hpsearch" in str(newer.problem())
    with pytest.raises(SchemaError, match="newer hpsearch"):
        require_current_schema(database_url)


def test_the_server_does_not_start_on_an_empty_database(database_url: str, tmp_path: Path) -> None:
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'elsewhere.db'}"  # not the embedded default
    settings = make_settings(database_url, tmp_path / "data")
    with pytest.raises(SchemaError, match="no hpsearch schema"), TestClient(create_app(settings)):
        pass


def test_serve_stops_with_one_line_on_an_old_database(
    migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate.downgrade(migrated_database_url, "0001")
    monkeypatch.setenv("HPS_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("HPS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["serve", "--port", "1"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "at revision 0001" in result.stderr
    assert "hpsearch db upgrade" in result.stderr
    assert "Traceback" not in result.output


def test_a_worker_stops_with_one_line_on_an_empty_database(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HPS_DATABASE_URL", database_url)
    monkeypatch.setenv("HPS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()  # the worker reads the process's settings
    try:
        assert worker_main(["--device", "cpu", "--exit-when-idle"]) == 2
        # a supervisor of several processes stops too, instead of restarting them forever
        assert worker_main(["--device", "cpu", "--trials-per-device", "2"]) == 2
    finally:
        get_settings.cache_clear()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert all(
        line.startswith("hpsearch worker: the database has no hpsearch schema") for line in lines
    )


def test_migrate_on_start_brings_an_empty_database_up(database_url: str, tmp_path: Path) -> None:
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    settings = make_settings(database_url, tmp_path / "data", migrate_on_start=True)
    with TestClient(create_app(settings)) as client:
        health = client.get("/healthz").json()
    assert health["migrations"] == "current"
    assert migrate.current(database_url) == expected_revision()


def test_a_schema_lost_under_a_running_server_is_a_503_that_says_why(
    migrated_database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(migrated_database_url, tmp_path / "data")
    with TestClient(create_app(settings), headers=AUTH) as client:
        assert client.get("/healthz").json()["migrations"] == "current"
        migrate.downgrade(migrated_database_url, "0001")
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["migrations"] == "behind"
        assert "hpsearch db upgrade" in health.json()["detail"]
        migrate.downgrade(migrated_database_url, "base")
        response = client.post("/api/v1/studies", json=valid_spec())
        assert response.status_code == 503
        assert "no hpsearch schema" in response.json()["detail"]
        assert client.get("/healthz").json()["migrations"] == "missing"

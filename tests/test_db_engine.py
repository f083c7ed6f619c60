"""PostgreSQL pools ping a connection only after it sat idle, and replace a dead one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

import service.db.engine as engine_module
from service.db.engine import create_db_engine
from tests.conftest import _libpq, fresh_postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Calls of the dialect's ping, recorded."""
    calls: list[float] = []
    original = cast(Callable[[Any, Any], bool], PGDialect_psycopg.do_ping)

    def counted(self: Any, dbapi_connection: Any) -> bool:
        calls.append(1.0)
        return original(self, dbapi_connection)

    monkeypatch.setattr(PGDialect_psycopg, "do_ping", counted)
    return calls


def make_engine(monkeypatch: pytest.MonkeyPatch, url: str, idle_s: float) -> Engine:
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", idle_s)
    return create_db_engine(url, pool_size=1)


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_in_steady_use_is_not_pinged(
    monkeypatch: pytest.MonkeyPatch, pings: list[float]
) -> None:
    with fresh_postgres_database() as url:
        engine = make_engine(monkeypatch, url, idle_s=60.0)
        try:
            pids = {backend_pid(engine) for _ in range(20)}
        finally:
            engine.dispose()
    assert len(pids) == 1  # one pooled connection, reused
    assert pings == []


def test_an_idle_connection_that_died_is_replaced_before_use(
    monkeypatch: pytest.MonkeyPatch, pings: list[float]
) -> None:
    with fresh_postgres_database() as url:
        engine = make_engine(monkeypatch, url, idle_s=0.0)
        try:
            first = backend_pid(engine)
            with psycopg.connect(_libpq(url), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            second = backend_pid(engine)  # no error: the dead connection failed its ping
            third = backend_pid(engine)
        finally:
            engine.dispose()
    assert second != first
    assert third == second  # the replacement is alive and kept
    assert len(pings) == 2  # idle_s=0: every reuse of a pooled connection is pinged


@pytest.mark.parametrize("prepared", [True, False])
def test_prepared_statements_can_be_turned_off_for_pgbouncer(prepared: bool) -> None:
    with fresh_postgres_database() as url:
        engine = create_db_engine(url, prepared_statements=prepared)
        try:
            with engine.connect() as connection:
                raw = connection.connection.driver_connection
                assert isinstance(raw, psycopg.Connection)
                assert raw.prepare_threshold == (5 if prepared else None)  # psycopg's default: 5
        finally:
            engine.dispose()


def test_only_postgresql_gets_connect_arguments() -> None:
    from service.db.engine import postgres_connect_args

    assert postgres_connect_args("sqlite:///x.db", prepared_statements=False) == {}
    assert postgres_connect_args("postgresql+psycopg://u@h/d") == {}
    assert postgres_connect_args("postgresql+psycopg://u@h/d", prepared_statements=False) == {
        "prepare_threshold": None
    }

"""Engines and sessions: one engine per process, built from settings (never at import)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def postgres_connect_args(url: str, prepared_statements: bool = True) -> dict[str, Any]:
    """The DB-API `connect` arguments for `url`: without server-side prepared statements
    (psycopg prepares a statement run five times on a connection) when told, for PgBouncer's
    transaction pooling, which hands each transaction any server connection."""
    if make_url(url).get_backend_name() == "postgresql" and not prepared_statements:
        return {"prepare_threshold": None}
    return {}


def create_db_engine(
    url: str, *, pool_size: int = 5, immediate: bool = False, prepared_statements: bool = True
) -> Engine:
    """SQLite: WAL, foreign keys, a generous busy timeout. PostgreSQL: a pool whose
    connections are pinged after sitting idle (and `postgres_connect_args`).

    immediate: SQLite transactions start with BEGIN IMMEDIATE, taking the write lock up front,
    so two processes that read-then-write (a queue claim) wait for each other instead of one
    failing with "database is locked" when it tries to upgrade its read lock.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        if immediate:
            # pysqlite's own BEGIN is turned off so the one below is the only one (SQLAlchemy's
            # documented recipe for SQLite transaction control).
            event.listen(engine, "connect", _no_implicit_begin)
            event.listen(engine, "begin", _begin_immediate)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args=postgres_connect_args(url, prepared_statements),
    )
    _ping_after_idle(engine, PING_AFTER_IDLE_S)
    return engine


PING_AFTER_IDLE_S = 1.0


def _ping_after_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection at checkout only if it sat idle for `idle_s` or more.

    SQLAlchemy's `pool_pre_ping` pings at every checkout: a round trip per API request (about
    a tenth of a study read's time). A connection in steady use proves itself alive; one that
    sat idle (across a database restart, say) is pinged, and a dead one is replaced before
    anything runs on it (a checkout handler's `DisconnectionError` makes the pool discard the
    connection and take another). PgBouncer's `server_check_delay` works the same way.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # any failure: the connection is unusable
            raise DisconnectionError(f"pooled connection failed its ping: {error}") from error


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _no_implicit_begin(connection: Any, _record: Any) -> None:
    connection.isolation_level = None


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    with factory() as session, session.begin():
        yield session

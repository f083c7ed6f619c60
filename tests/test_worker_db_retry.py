"""with_db_retry: database outages are waited out, other errors and long outages are not."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import QueuePool

from service.db.engine import create_db_engine
from service.worker.db_retry import release_idle_while_away, retried, with_db_retry


def outage(failures: int) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def action() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise OperationalError("SELECT 1", {}, Exception("the database system is starting up"))
        return "done"

    return calls, action


def test_an_outage_shorter_than_the_patience_is_waited_out() -> None:
    calls, action = outage(failures=3)
    assert with_db_retry(action, "test", patience_s=5, first_delay_s=0.01) == "done"
    assert len(calls) == 4


def test_an_outage_longer_than_the_patience_raises_the_database_error() -> None:
    calls, action = outage(failures=1_000)
    with pytest.raises(OperationalError, match="starting up"):
        with_db_retry(action, "test", patience_s=0.2, first_delay_s=0.05, max_delay_s=0.05)
    assert 2 <= len(calls) <= 6  # retried, with waits, then gave up


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        with_db_retry(action, "test", patience_s=5)
    assert calls == [1]


def test_a_retried_method_uses_its_objects_patience() -> None:
    class Writer:
        def __init__(self) -> None:
            self.patience_s = 5.0
            self.calls = 0

        @retried("write")
        def write(self, value: int) -> int:
            self.calls += 1
            if self.calls < 3:
                raise OperationalError("INSERT", {}, Exception("server closed the connection"))
            return value * 2

    writer = Writer()
    assert writer.write(21) == 42
    assert writer.calls == 3


def test_a_refused_connection_closes_the_idle_pooled_ones_before_waiting(
    database_url: str,
) -> None:
    """Workers at a server's connection limit each wait with their pools' idle connections
    closed, so that the slots they hold free up for the others (PostgreSQL); SQLite's pool
    (no connection limit, and "database is locked" is an OperationalError too) is kept."""
    engine = release_idle_while_away(create_db_engine(database_url, pool_size=2))
    pool = engine.pool
    assert isinstance(pool, QueuePool)  # (both backends' default for a file or a server)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert pool.checkedin() == 1  # returned to the pool, open
        idle_at_retry: list[int] = []
        _calls, refused_once = outage(failures=1)

        def action() -> str:
            idle_at_retry.append(pool.checkedin())
            return refused_once()

        assert with_db_retry(action, "test", patience_s=5, first_delay_s=0.01) == "done"
        kept = 1 if database_url.startswith("sqlite") else 0
        assert idle_at_retry == [1, kept]
        with engine.connect() as connection:  # the pool works on, reconnecting
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()

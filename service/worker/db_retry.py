"""Riding out a database restart: retry an idempotent database action while the server is away.

A restart drops every connection and refuses new ones for a while; psycopg and sqlite3 report
both as `OperationalError` (SQLAlchemy wraps them as `sqlalchemy.exc.OperationalError`, and
`InterfaceError` for a connection that is already closed). The pool's pre-ping replaces dead
connections on the next checkout, so retrying the whole action is enough. Only idempotent
actions are retried: every recorder write is (merges and assignments), and so are Optuna's
`suggest_*` on the same trial, `report` of the same step and `tell(..., skip_if_finished=True)`.
A server at its connection limit refuses new connections the same way, and is waited out alike:
while a process waits, its pools keep no idle connections (`release_idle_while_away`), or
workers waiting for a slot would hold the slots that the others wait for.
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

logger = logging.getLogger(__name__)

RETRYABLE = (OperationalError, InterfaceError)
T = TypeVar("T")
P = ParamSpec("P")

_RELEASED_WHILE_AWAY: weakref.WeakSet[Engine] = weakref.WeakSet()


def release_idle_while_away(engine: Engine) -> Engine:
    """Have `engine`'s idle pooled connections closed whenever this process finds the
    database away (`close_idle_connections`). PostgreSQL only: SQLite has no connection
    limit, and its "database is locked" is an `OperationalError` too."""
    if engine.dialect.name != "sqlite":
        _RELEASED_WHILE_AWAY.add(engine)
    return engine


def close_idle_connections() -> None:
    """Close the idle connections of every pool given to `release_idle_while_away`.

    A server at its connection limit refuses everyone until a connection closes; a pool
    keeps the connections it returned to, so sixteen workers each waiting with one idle
    connection would wait for each other until their patience ran out. Checked-out
    connections are untouched: the pool keeps working and reconnects when next asked.
    """
    for engine in list(_RELEASED_WHILE_AWAY):
        engine.pool.dispose()


def with_db_retry(
    action: Callable[[], T],
    what: str,
    *,
    patience_s: float,
    first_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
) -> T:
    """`action()`, retried with exponential backoff while the database is unreachable, for up
    to `patience_s` in all; then its last error propagates."""
    deadline = time.monotonic() + patience_s
    delay = first_delay_s
    while True:
        try:
            return action()
        except Exception as raised:
            error = database_away(raised)
            if error is None or time.monotonic() + delay > deadline:
                raise
            reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
            logger.warning("%s: database unreachable (%s); retrying in %.1f s", what, reason, delay)
            close_idle_connections()
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)


def database_away(error: BaseException) -> OperationalError | InterfaceError | None:
    """The refused or lost connection behind `error`, if that is what it is: the error
    itself, or what it wraps (Optuna raises `StorageInternalError` from SQLAlchemy's
    `OperationalError` when a commit meets a restarting or full server)."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, RETRYABLE):
            return seen
        seen = seen.__cause__
    return None


class _Patient(Protocol):
    patience_s: float


S = TypeVar("S", bound=_Patient)


_Method = Callable[Concatenate[S, P], T]


def retried(what: str) -> Callable[[_Method[S, P, T]], _Method[S, P, T]]:
    """A method decorator: the method is retried for up to its object's `patience_s`."""

    def decorate(method: _Method[S, P, T]) -> _Method[S, P, T]:
        @functools.wraps(method)
        def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
            def attempt() -> T:
                return method(self, *args, **kwargs)

            return with_db_retry(attempt, what, patience_s=self.patience_s)

        return wrapper

    return decorate

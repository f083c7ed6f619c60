"""How read-only use cases use their session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session


@contextmanager
def reading(session: Session) -> Iterator[Session]:
    """The transaction of a use case that only reads, run in autocommit.

    Each statement then needs no BEGIN and COMMIT round trips (two of a list's four), and sees
    what was committed when it started: what PostgreSQL's READ COMMITTED gives every statement
    inside a transaction too. A page's count and its rows may so differ by a trial that ended
    in between, as they could before.
    """
    with session.begin():
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session

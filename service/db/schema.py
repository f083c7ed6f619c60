"""Is the database's schema the one this code expects? Its Alembic revision, said in one line.

The server and every worker check at start (`require_current_schema`): on an empty database,
one migrated by older code, or one migrated by *newer* code (an old worker left running after
an upgrade) they stop with what was found, what is expected and the command to run, instead of
failing later on a missing table. `/healthz` reports the same state.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import column, select, table

from service.db.models import TABLE_PREFIX

logger = logging.getLogger(__name__)

SchemaStatus = Literal["current", "missing", "behind", "ahead"]

UPGRADE_COMMAND = "hpsearch db upgrade"


class SchemaError(RuntimeError):
    """The database's schema is not the one this code expects; the message says what to do."""


@dataclass(frozen=True)
class SchemaState:
    status: SchemaStatus
    found: str | None
    """The database's revision (None: hpsearch's migrations never ran on it)."""
    expected: str

    def problem(self) -> str | None:
        """One line on what is wrong and what to run, or None when the schema is current."""
        if self.status == "current":
            return None
        if self.status == "missing":
            return (
                f"the database has no hpsearch schema (expected revision {self.expected}): "
                f"run `{UPGRADE_COMMAND}` (or `hpsearch serve --migrate`)"
            )
        if self.status == "behind":
            return (
                f"the database's schema is at revision {self.found}, this hpsearch expects "
                f"{self.expected}: run `{UPGRADE_COMMAND}` (or `hpsearch serve --migrate`)"
            )
        return (
            f"the database's schema is at revision {self.found}, which this hpsearch (at "
            f"{self.expected}) does not know: it was migrated by a newer hpsearch; upgrade this "
            "process's hpsearch instead of downgrading the database"
        )


@functools.cache
def expected_revision() -> str:
    from service.db import migrate

    head = migrate.head()
    if head is None:
        raise SchemaError("no Alembic migrations found in migrations/versions")
    return head


@functools.cache
def _known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    from service.db import migrate

    script = ScriptDirectory.from_config(migrate.alembic_config(""))
    return frozenset(revision.revision for revision in script.walk_revisions())


def state_of(found: str | None) -> SchemaState:
    expected = expected_revision()
    status: SchemaStatus
    if found == expected:
        status = "current"
    elif found is None:
        status = "missing"
    elif found in _known_revisions():
        status = "behind"
    else:
        status = "ahead"
    return SchemaState(status, found, expected)


RECORDED_REVISION = select(
    table(f"{TABLE_PREFIX}alembic_version", column("version_num")).c.version_num
)
"""The revision Alembic recorded (no row, or no table: never migrated)."""


def schema_state(url: str) -> SchemaState:
    from service.db import migrate

    return state_of(migrate.current(url))


def require_current_schema(url: str) -> SchemaState | None:
    """The schema's state, raising `SchemaError` with its one-line problem unless current.
    None when the database does not answer: a process started before its database waits
    for it as it would later (its health check and retries say so), it does not crash."""
    from sqlalchemy.exc import OperationalError

    try:
        state = schema_state(url)
    except OperationalError as error:
        logger.warning("cannot check the database's schema now (unreachable): %s", error)
        return None
    problem = state.problem()
    if problem is not None:
        raise SchemaError(problem)
    return state

"""Sixteen workers straight on PostgreSQL (no PgBouncer) with too few connections for them all.

The server refuses connections beyond a limit ("sorry, too many clients already" at
`max_connections`, "too many connections for role" at a role's `CONNECTION LIMIT`); both are
an `OperationalError` at connect. A role limited to fewer connections than 16 workers open
stands in for a server at its `max_connections` (changing that needs a server restart): each
worker must say so in one line, wait and retry, and the study must still run exactly its
trials, with no crash and no traceback.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from service.db.engine import create_db_engine, make_session_factory
from service.db.models import Study, StudyStatus, Trial, TrialState
from tests.conftest import POSTGRES_SERVER, _libpq, create_schema, fresh_postgres_database
from tests.test_worker import add_study, spec
from tests.test_worker_processes import LOGS, start_worker

WORKERS = 16
TRIALS = 32
LIMIT = 20
"""Connections the workers' role may hold at once: 16 workers want about 40 (each its pool of
two and Optuna's)."""

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@dataclass(frozen=True)
class Limited:
    admin: str
    limited: str
    role: str


@pytest.fixture
def limited_role() -> Iterator[Limited]:
    role = f"hps_limited_{uuid.uuid4().hex[:8]}"
    with fresh_postgres_database() as admin:
        database = str(make_url(admin).database)
        with psycopg.connect(_libpq(admin), autocommit=True) as connection:
            connection.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {LIMIT}')
            connection.execute(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
            connection.execute(f'ALTER SCHEMA public OWNER TO "{role}"')
        limited = make_url(admin).set(username=role).render_as_string(hide_password=False)
        create_schema(limited)  # the role owns what it works on
        try:
            yield Limited(admin, limited, role)
        finally:
            with psycopg.connect(_libpq(admin), autocommit=True) as connection:
                connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (role,),
                )
    with psycopg.connect(_libpq(POSTGRES_SERVER), autocommit=True) as connection:
        connection.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_workers_beyond_the_connection_limit_wait_and_retry_without_a_crash(
    limited_role: Limited, tmp_path: Path
) -> None:
    engine = create_db_engine(limited_role.admin)  # the test's own, as a superuser
    try:
        sessions = make_session_factory(engine)
        study_id = add_study(
            sessions,
            spec(
                budget={"n_trials": TRIALS, "max_epochs": 1, "max_parallel_trials": WORKERS},
                early_stopping=None,
            ),
        )
        workers = [
            # a grace beyond the heartbeats a full server refuses: this tests waiting for a
            # connection, not the reaper (a 2 s grace hands a starved worker's trial over)
            start_worker(
                limited_role.limited, tmp_path / "data", "--exit-when-idle", HPS_WORKER_GRACE_S="30"
            )
            for _ in range(WORKERS)
        ]
        try:
            deadline = time.monotonic() + 400
            while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        logs = [LOGS[w.pid].read_text() for w in workers]
        failures = [log[-3000:] for w, log in zip(workers, logs, strict=True) if w.returncode != 0]
        assert not failures, failures[0]
        refused = [
            line for log in logs for line in log.splitlines() if "too many connections" in line
        ]
        assert refused, "no worker met the limit: the test no longer tests it"
        # each a one-line warning: the action waits and retries, the heartbeat beats again, or
        # the start's schema check is put off (the next step waits for the database)
        said = ("retrying in", "heartbeat failed", "cannot check the database's schema now")
        unclear = [line for line in refused if not any(words in line for words in said)]
        assert not unclear, unclear[:3]
        tracebacks = [line for log in logs for line in log.splitlines() if "Traceback" in line]
        assert not tracebacks, next(log[-3000:] for log in logs if "Traceback" in log)
        with sessions() as session:
            study = session.get_one(Study, study_id)
            trials = session.scalars(select(Trial).where(Trial.study_id == study_id)).all()
        assert study.status == StudyStatus.COMPLETED
        assert sorted(t.number for t in trials) == list(range(TRIALS))  # none lost, none twice
        assert all(t.state == TrialState.COMPLETE for t in trials)
    finally:
        engine.dispose()  # (a failed assertion must not leave its connections open)

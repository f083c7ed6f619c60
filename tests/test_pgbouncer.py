"""Sixteen worker processes on one study through PgBouncer in transaction pooling (PostgreSQL).

PgBouncer hands each transaction whichever server connection is free, so nothing may live on a
connection between transactions: psycopg's server-side prepared statements do
(`HPS_DB_PREPARED_STATEMENTS=false` turns them off; PgBouncer 1.21+ can track them itself).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from service.db.engine import create_db_engine, make_session_factory
from service.db.models import Study, StudyStatus, Trial, TrialState
from tests.api_fixtures import free_port
from tests.conftest import _libpq, create_schema, fresh_postgres_database, require
from tests.test_worker import add_study, spec
from tests.test_worker_processes import LOGS, start_worker

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
POOL = 5
WORKERS = 16
TRIALS = 48

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@dataclass(frozen=True)
class Bounced:
    direct: str
    bounced: str
    database: str


@pytest.fixture
def pgbouncer() -> Iterator[Bounced]:
    require(Path(PGBOUNCER).is_file(), "PgBouncer is not installed (apt-get install pgbouncer)")
    with fresh_postgres_database() as direct:
        create_schema(direct)
        name = str(make_url(direct).database)
        # PgBouncer will not run as root; as postgres it must read its files (pytest's own
        # temporary directories are private to root).
        home = Path(tempfile.mkdtemp(prefix="hps-pgbouncer-"))
        home.chmod(0o777)
        port = free_port()
        (home / "users.txt").write_text('"postgres" ""\n')
        ini = home / "pgbouncer.ini"
        ini.write_text(
            f"[databases]\n{name} = host=127.0.0.1 port=5432 dbname={name}\n"
            "[pgbouncer]\nlisten_addr = 127.0.0.1\n"
            f"listen_port = {port}\nunix_socket_dir =\nauth_type = trust\n"
            f"auth_file = {home / 'users.txt'}\npool_mode = transaction\n"
            f"default_pool_size = {POOL}\nmax_client_conn = 400\n"
            f"logfile = {home / 'pgbouncer.log'}\npidfile = {home / 'pgbouncer.pid'}\n"
        )
        for path in home.iterdir():
            path.chmod(0o666)
        as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
        bouncer = subprocess.Popen([PGBOUNCER, *as_user, str(ini)], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if bouncer.poll() is not None or time.monotonic() > deadline:
                        log = (
                            (home / "pgbouncer.log").read_text()
                            if (home / "pgbouncer.log").exists()
                            else ""
                        )
                        raise AssertionError(f"PgBouncer did not start: {log}") from None
                    time.sleep(0.1)
            bounced = make_url(direct).set(port=port).render_as_string(hide_password=False)
            yield Bounced(direct, bounced, name)
        finally:
            bouncer.terminate()
            bouncer.wait(timeout=10)
            shutil.rmtree(home, ignore_errors=True)


def server_connections(direct: str, database: str) -> int:
    """Backends connected to `database`, this probe's own not counted."""
    with psycopg.connect(_libpq(direct)) as probe:
        row = probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_sixteen_workers_through_pgbouncer_run_exactly_n_trials_on_a_bounded_pool(
    pgbouncer: Bounced, tmp_path: Path
) -> None:
    engine = create_db_engine(pgbouncer.direct)
    sessions = make_session_factory(engine)
    study_id = add_study(
        sessions,
        spec(
            budget={"n_trials": TRIALS, "max_epochs": 1, "max_parallel_trials": WORKERS},
            early_stopping=None,
        ),
    )
    engine.dispose()  # so the server's connections to the database are PgBouncer's alone
    workers = [
        start_worker(
            pgbouncer.bounced,
            tmp_path / "data",
            "--exit-when-idle",
            HPS_DB_PREPARED_STATEMENTS="false",
        )
        for _ in range(WORKERS)
    ]
    peak = 0
    try:
        while any(worker.poll() is None for worker in workers):
            peak = max(peak, server_connections(pgbouncer.direct, pgbouncer.database))
            time.sleep(0.2)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    failures = [LOGS[w.pid].read_text()[-3000:] for w in workers if w.returncode != 0]
    assert not failures, failures[0]
    errors = [
        line
        for w in workers
        for line in LOGS[w.pid].read_text().splitlines()
        if "Traceback" in line or "ERROR" in line
    ]
    assert not errors, errors[:5]
    with sessions() as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(select(Trial).where(Trial.study_id == study_id)).all()
    engine.dispose()
    assert study.status == StudyStatus.COMPLETED
    assert sorted(t.number for t in trials) == list(range(TRIALS))  # none lost, none twice
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.worker_id for t in trials}) > 1  # the workers shared the study
    assert 0 < peak <= POOL  # PgBouncer's pool bounds the server's connections
    storage = optuna.storages.RDBStorage(pgbouncer.direct)
    try:
        frozen = optuna.load_study(study_name=study.optuna_study_name, storage=storage).trials
    finally:
        storage.engine.dispose()
    numbers = sorted(t.optuna_trial_id for t in trials if t.optuna_trial_id is not None)
    assert sorted(t.number for t in frozen) == numbers == list(range(TRIALS))

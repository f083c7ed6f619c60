"""Real worker processes through outages: a cancelled study, an API server restart, and a
database that drops every connection and refuses new ones for a while."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service.client import ApiClient
from service.db.engine import create_db_engine, make_session_factory
from service.db.models import Study, StudyStatus, Trial, TrialState
from service.stack import BackgroundServer, base_url
from service.studies import cancel_study
from tests.api_fixtures import TOKEN, free_port, make_settings
from tests.conftest import create_schema, fresh_postgres_database
from tests.test_worker import add_study, spec
from tests.test_worker_processes import (
    LOGS,
    SLOW_DATA,
    epochs_of_first_trial,
    finish,
    resumable_spec,
    sessions,
    start_worker,
    wait_for,
)

pytestmark = pytest.mark.slow
__all__ = ["sessions"]  # a fixture, imported for the tests below


def add(factory: sessionmaker[Session], n_trials: int, max_epochs: int = 3) -> int:
    return add_study(
        factory, spec(dataset=SLOW_DATA, budget={"n_trials": n_trials, "max_epochs": max_epochs})
    )


def count_state(factory: sessionmaker[Session], study_id: int, state: TrialState) -> int:
    with factory() as session:
        return (
            session.scalar(
                select(func.count(Trial.id)).where(Trial.study_id == study_id, Trial.state == state)
            )
            or 0
        )


def status_of(factory: sessionmaker[Session], study_id: int) -> StudyStatus:
    with factory() as session:
        return StudyStatus(session.get_one(Study, study_id).status)


def test_cancelling_a_running_study_lets_its_trial_finish_and_starts_no_more(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    study_id = add_study(sessions, resumable_spec(n_trials=5))
    worker = start_worker(migrated_database_url, tmp_path)  # stays up: it must not claim more
    try:
        wait_for(lambda: epochs_of_first_trial(sessions, study_id) >= 1, 120, "a running trial")
        with sessions() as session:
            assert cancel_study(session, study_id).cancel_requested
        wait_for(lambda: status_of(sessions, study_id) == StudyStatus.CANCELLED, 120, "the cancel")
        time.sleep(1.0)  # several empty polls: the worker must not start another trial
    finally:
        worker.send_signal(signal.SIGTERM)
        finish(worker)
    with sessions() as session:
        trials = session.scalars(select(Trial).where(Trial.study_id == study_id)).all()
        study = session.get_one(Study, study_id)
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE)]
    assert trials[0].epochs_run == 6  # the running trial finished its epochs
    assert study.finished_at is not None


def test_the_api_server_restarts_mid_study_and_nothing_is_lost(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = make_settings(migrated_database_url, tmp_path / "data", port=free_port())
    server = BackgroundServer(settings)
    server.start()
    with ApiClient(base_url(settings), TOKEN) as api:
        study = api.submit_study(
            spec(dataset=SLOW_DATA, budget={"n_trials": 4, "max_epochs": 3}).model_dump(mode="json")
        )
        worker = start_worker(migrated_database_url, tmp_path, "--exit-when-idle")
        try:
            wait_for(
                lambda: count_state(sessions, study["id"], TrialState.COMPLETE) >= 1,
                120,
                "a finished trial",
            )
            server.stop()
            with pytest.raises(Exception, match="cannot reach"):
                api.get_study(study["id"])
            done_while_down = count_state(sessions, study["id"], TrialState.COMPLETE)
            wait_for(  # the worker needs no server: it goes on
                lambda: count_state(sessions, study["id"], TrialState.COMPLETE) > done_while_down,
                120,
                "a trial finished while the server was down",
            )
            server = BackgroundServer(settings)
            server.start()
        finally:
            finish(worker)
        final = api.get_study(study["id"])
        page = api.list_trials(study["id"], limit=50)
    server.stop()
    assert final["status"] == "completed"
    assert final["trial_counts"]["complete"] == 4
    assert [t["number"] for t in page["items"]] == [0, 1, 2, 3]
    assert all(t["state"] == "complete" and t["epochs_run"] == 3 for t in page["items"])


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database (an outage is a server's, not a file's)."""
    with fresh_postgres_database() as url:
        create_schema(url)
        yield url


def database_outage(url: str, seconds: float) -> None:
    """What a restart looks like to clients: every connection dropped, new ones refused."""
    name = make_url(url).database
    admin_url = make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin_url.render_as_string(hide_password=False), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            time.sleep(seconds)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@pytest.mark.postgres
def test_a_worker_rides_out_a_database_restart(postgres_url: str, tmp_path: Path) -> None:
    engine = create_db_engine(postgres_url)
    factory = make_session_factory(engine)
    try:
        study_id = add(factory, n_trials=3, max_epochs=4)
        worker = start_worker(postgres_url, tmp_path, "--exit-when-idle")
        try:
            wait_for(lambda: epochs_of_first_trial(factory, study_id) >= 2, 120, "two epochs")
            database_outage(postgres_url, seconds=3)
        finally:
            finish(worker)  # exit code 0: the worker went on after the outage
        log = LOGS[worker.pid].read_text()
        with factory() as session:
            study = session.get_one(Study, study_id)
            trials = session.scalars(select(Trial).where(Trial.study_id == study_id)).all()
    finally:
        engine.dispose()
    assert "database unreachable" in log  # it saw the outage and waited for the server
    assert study.status == StudyStatus.COMPLETED
    assert sorted((t.number, t.state, t.epochs_run) for t in trials) == [
        (0, TrialState.COMPLETE, 4),
        (1, TrialState.COMPLETE, 4),
        (2, TrialState.COMPLETE, 4),
    ]

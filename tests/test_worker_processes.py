"""Real worker processes: SIGKILL and SIGTERM mid-trial, and two workers on one study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import create_db_engine, make_session_factory
from service.db.models import Study, StudyStatus, Trial, TrialEpoch, TrialState
from tests.test_worker import add_study, spec

pytestmark = pytest.mark.slow

LOGS: dict[int, Path] = {}

# Epochs slow enough (about 0.2-0.4 s here) to stop a worker between two of them.
SLOW_DATA = {"name": "synthetic", "n_samples": 12_000, "n_features": 20, "n_classes": 3}


@pytest.fixture
def sessions(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(migrated_database_url)
    yield make_session_factory(engine)
    engine.dispose()


def start_worker(url: str, data_dir: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "HPS_DATABASE_URL": url,
        "HPS_DATA_DIR": str(data_dir),
        "HPS_HEARTBEAT_INTERVAL_S": "0.2",
        "HPS_WORKER_GRACE_S": "2",
        "HPS_EPOCH_FLUSH_S": "0",  # every epoch at once: the tests stop workers between epochs
        **env,
    }
    log = data_dir / f"worker-{time.monotonic_ns()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.worker",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--poll",
                "0.2",
                *extra,
            ],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    LOGS[worker.pid] = log  # where `finish` finds the log to show on failure
    return worker


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def epochs_of_first_trial(factory: sessionmaker[Session], study_id: int) -> int:
    with factory() as session:
        trial = session.scalars(
            select(Trial).where(Trial.study_id == study_id, Trial.number == 0)
        ).first()
        return 0 if trial is None else trial.epochs_run


def resumable_spec(n_trials: int) -> Any:
    return spec(
        dataset=SLOW_DATA,
        budget={"n_trials": n_trials, "max_epochs": 6},
        early_stopping=None,
        checkpoint={"save_best_only": True, "resume_every_s": 0},
    )


def finish(worker: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    try:
        code = worker.wait(timeout=timeout_s)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 0, LOGS[worker.pid].read_text()


def test_a_killed_worker_s_trial_is_retried_from_its_checkpoint(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    url = migrated_database_url
    study_id = add_study(sessions, resumable_spec(n_trials=2))
    first = start_worker(url, tmp_path)
    try:
        # epoch 3 has begun, so epoch 2 is in the resume checkpoint (written every epoch here)
        wait_for(lambda: epochs_of_first_trial(sessions, study_id) >= 3, 120, "three epochs")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = start_worker(url, tmp_path, "--exit-when-idle")
    finish(second)

    with sessions() as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(
            select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
        ).all()
        retry = next(t for t in trials if t.retry_of_id is not None)
        retry_epochs = session.scalars(
            select(TrialEpoch.epoch).where(TrialEpoch.trial_id == retry.id)
        ).all()
    original = next(t for t in trials if t.id == retry.retry_of_id)
    assert study.status == StudyStatus.COMPLETED
    states = [(t.number, t.state, t.retry_of_id, t.error) for t in trials]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2, states  # exactly n_trials
    assert original.state == TrialState.FAILED
    assert original.error is not None
    assert "worker lost" in original.error
    assert retry.params == original.params
    # the retry resumed at the killed trial's last checkpoint, not at epoch 0
    assert retry.resumed_from_epoch is not None
    assert retry.resumed_from_epoch >= 2
    assert sorted(retry_epochs) == [1, 2, 3, 4, 5, 6]
    # its best file is where its row says (the original's, when it never improved after)
    assert retry.checkpoint_path is not None
    assert Path(retry.checkpoint_path).is_file()


def test_sigterm_hands_the_trial_over_and_exits_zero(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    url = migrated_database_url
    study_id = add_study(sessions, resumable_spec(n_trials=1))
    first = start_worker(url, tmp_path)
    wait_for(lambda: epochs_of_first_trial(sessions, study_id) >= 2, 120, "two epochs")
    first.send_signal(signal.SIGTERM)
    finish(first, timeout_s=60)
    with sessions() as session:
        waiting = session.scalars(
            select(Trial).where(Trial.study_id == study_id, Trial.state == TrialState.WAITING)
        ).one()
    assert waiting.last_checkpoint_path is not None

    second = start_worker(url, tmp_path, "--exit-when-idle")
    finish(second)
    with sessions() as session:
        study = session.get_one(Study, study_id)
        resumed = session.get_one(Trial, waiting.id)
    assert study.status == StudyStatus.COMPLETED
    assert resumed.state == TrialState.COMPLETE
    assert resumed.resumed_from_epoch is not None
    assert resumed.resumed_from_epoch >= 2


def test_two_workers_share_a_study_without_duplicates(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    url = migrated_database_url
    # Trials long enough that the first worker to start cannot run all six before the
    # second one's first claim (their starts differ by up to a second here).
    study_id = add_study(
        sessions,
        spec(dataset=SLOW_DATA, budget={"n_trials": 6, "max_epochs": 6, "max_parallel_trials": 2}),
    )
    # (no packing: a worker started first could otherwise pack both parallel slots)
    workers = [
        start_worker(url, tmp_path, "--exit-when-idle", "--pack-size", "1") for _ in range(2)
    ]
    for worker in workers:
        finish(worker)
    with sessions() as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(select(Trial).where(Trial.study_id == study_id)).all()
    assert study.status == StudyStatus.COMPLETED
    assert len(trials) == 6
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.worker_id for t in trials}) == 2  # both took part

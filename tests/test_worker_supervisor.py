"""Several worker processes per host: which devices they get, and that they share the work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Study, StudyStatus, Trial, TrialState, Worker
from service.worker.supervisor import plan_devices
from tests.test_worker import add_study, spec
from tests.test_worker_processes import SLOW_DATA, sessions, wait_for

__all__ = ["sessions"]  # a fixture, imported for the tests below


@pytest.mark.parametrize(
    ("device", "per_device", "gpus", "expected"),
    [
        ("cpu", 1, 0, ["cpu"]),
        ("cpu", 3, 2, ["cpu", "cpu", "cpu"]),
        ("auto", 1, 0, ["cpu"]),
        ("auto", 1, 2, ["cuda:0", "cuda:1"]),
        ("cuda", 2, 2, ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]),
        ("cuda:1", 3, 2, ["cuda:1", "cuda:1", "cuda:1"]),
    ],
)
def test_processes_are_planned_per_visible_device(
    device: str, per_device: int, gpus: int, expected: list[str]
) -> None:
    assert plan_devices(device, per_device, gpus) == expected


def test_a_plan_that_cannot_run_says_why() -> None:
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        plan_devices("cuda", 1, 0)
    with pytest.raises(ValueError, match="at least 1"):
        plan_devices("cpu", 0, 0)


def supervisor(url: str, data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "HPS_DATABASE_URL": url,
        "HPS_DATA_DIR": str(data_dir),
        "HPS_HEARTBEAT_INTERVAL_S": "0.2",
    }
    command = [sys.executable, "-m", "service.worker", "--device", "cpu", "--poll", "0.2"]
    return subprocess.Popen(
        [*command, "--trials-per-device", "2", *extra],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_two_processes_per_device_share_a_study(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    study_id = add_study(
        sessions,
        # Trials long enough (~1 s) that the first process to start cannot run all four before
        # the second one's first claim (their starts differ by up to a second here).
        spec(dataset=SLOW_DATA, budget={"n_trials": 4, "max_epochs": 8, "max_parallel_trials": 2}),
    )
    # (no packing: the process started first could otherwise pack both parallel slots)
    process = supervisor(migrated_database_url, tmp_path, "--exit-when-idle", "--pack-size", "1")
    _, log = process.communicate(timeout=240)
    assert process.returncode == 0, log.decode()
    with sessions() as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(select(Trial).where(Trial.study_id == study_id)).all()
        devices = session.scalars(select(Worker.device)).all()
    assert study.status == StudyStatus.COMPLETED
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.worker_id for t in trials}) == 2, log.decode()  # both processes trained
    assert devices == ["cpu", "cpu"]


@pytest.mark.slow
def test_sigterm_stops_every_process_and_exits_zero(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    process = supervisor(migrated_database_url, tmp_path)

    def registered() -> int:
        with sessions() as session:
            return len(session.scalars(select(Worker)).all())

    try:
        wait_for(lambda: registered() == 2, 120, "two registered worker processes")
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, log.decode()
    with sessions() as session:
        assert session.scalars(select(Worker.status)).all() == ["stopped", "stopped"]

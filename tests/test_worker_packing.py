"""A worker packs the parallel trials of a small-MLP study; the service sees ordinary trials."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Study, StudyStatus, Trial, TrialEpoch, TrialState
from service.worker.loop import WorkerOptions, WorkerProcess
from tests.test_worker import add_study, sessions, settings_for, spec
from tests.test_worker_processes import (
    SLOW_DATA,
    epochs_of_first_trial,
    finish,
    start_worker,
    wait_for,
)

__all__ = ["sessions"]  # the fixture, shared with test_worker

# One optimizer class: every sampled trial shares the pack key (their own rate and dropout).
PACKABLE_SPACE: dict[str, Any] = {
    "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
}


def run_worker(url: str, tmp_path: Path, pack_size: int) -> None:
    options = WorkerOptions(device="cpu", exit_when_idle=True, pack_size=pack_size)
    assert WorkerProcess(settings_for(url, tmp_path), options).run() == 0


def trials_of(sessions: sessionmaker[Session], study_id: int) -> list[Trial]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
            ).all()
        )


def test_a_worker_packs_a_parallel_study_into_ordinary_trials(
    migrated_database_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    parallel = spec(
        search_space=PACKABLE_SPACE,
        fixed={"optimizer": "adam"},
        budget={"n_trials": 4, "max_epochs": 3, "max_parallel_trials": 4},
    )
    packed_id = add_study(sessions, parallel)
    with caplog.at_level(logging.INFO, logger="service.worker.runner"):
        run_worker(migrated_database_url, tmp_path, pack_size=4)
    assert "packing trials 0, 1, 2, 3 of study" in caplog.text
    trials = trials_of(sessions, packed_id)
    with sessions() as session:
        study = session.get_one(Study, packed_id)
        epochs = session.scalars(
            select(TrialEpoch.trial_id).where(TrialEpoch.trial_id.in_([t.id for t in trials]))
        ).all()
    assert study.status == StudyStatus.COMPLETED
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({str(t.params) for t in trials}) == 4  # four sampled configurations
    assert all(t.epochs_run == 3 and t.checkpoint_path for t in trials)
    assert sorted(epochs) == sorted([t.id for t in trials] * 3)
    storage = optuna.storages.RDBStorage(migrated_database_url)
    try:
        optuna_study = optuna.load_study(study_name=study.optuna_study_name, storage=storage)
        told = {t.number: t.value for t in optuna_study.trials}
    finally:
        storage.engine.dispose()
    assert told == {t.optuna_trial_id: t.value for t in trials}
    assert study.best_value == min(t.value for t in trials if t.value is not None)


def test_what_packing_does_not_pay_for_runs_alone_and_says_why(
    migrated_database_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch_norm = spec(
        search_space=PACKABLE_SPACE,
        fixed={"optimizer": "adam", "batch_norm": True},
        budget={"n_trials": 2, "max_epochs": 2, "max_parallel_trials": 2},
    )
    study_id = add_study(sessions, batch_norm)
    with caplog.at_level(logging.INFO, logger="service.worker.runner"):
        run_worker(migrated_database_url, tmp_path, pack_size=4)
    assert "runs alone: batch normalization is not packed" in caplog.text
    assert "packing trials" not in caplog.text
    assert [t.state for t in trials_of(sessions, study_id)] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_a_worker_killed_mid_pack_gives_every_member_its_resumed_retry(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    url = migrated_database_url
    study_id = add_study(
        sessions,
        spec(
            dataset=SLOW_DATA,
            search_space=PACKABLE_SPACE,
            fixed={"optimizer": "adam"},
            budget={"n_trials": 3, "max_epochs": 6, "max_parallel_trials": 3},
            early_stopping=None,
            checkpoint={"save_best_only": True, "resume_every_s": 0},
        ),
    )
    first = start_worker(url, tmp_path, "--pack-size", "3")
    try:
        # epoch 3 has begun, so epoch 2 is in every member's resume checkpoint
        wait_for(lambda: epochs_of_first_trial(sessions, study_id) >= 3, 120, "three epochs")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = start_worker(url, tmp_path, "--exit-when-idle", "--pack-size", "3")
    finish(second)

    trials = trials_of(sessions, study_id)
    originals = [t for t in trials if t.retry_of_id is None]
    retries = {t.retry_of_id: t for t in trials if t.retry_of_id is not None}
    with sessions() as session:
        study = session.get_one(Study, study_id)
    assert study.status == StudyStatus.COMPLETED
    assert [t.state for t in originals] == [TrialState.FAILED] * 3
    assert all("worker lost" in (t.error or "") for t in originals)
    assert len(retries) == 3  # every member of the killed pack got its retry
    for original in originals:
        retry = retries[original.id]
        assert retry.state == TrialState.COMPLETE
        assert retry.params == original.params
        assert retry.resumed_from_epoch is not None
        assert retry.resumed_from_epoch >= 2  # from the pack's checkpoint, not epoch 0
        assert retry.epochs_run == 6

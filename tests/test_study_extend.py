"""Extending a study: k more trials after it completed, with the same Optuna study (both DBs)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Study, StudyStatus, Trial, TrialState
from service.studies import extend_study
from tests.test_worker import add_study, run_worker_until_idle, sessions, settings_for, spec

__all__ = ["sessions"]  # the fixture, shared with the worker tests


@pytest.mark.parametrize("parallel", [1, 2], ids=["one-at-a-time", "parallel"])
def test_an_extended_study_ends_with_n_plus_k_trials_in_our_tables_and_optunas(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path, parallel: int
) -> None:
    study_spec = spec(
        budget={"n_trials": 2, "max_epochs": 2, "max_parallel_trials": parallel},
        sampler={"name": "tpe", "seed": 3},
    )
    study_id = add_study(sessions, study_spec)
    run_worker_until_idle(migrated_database_url, tmp_path)
    with sessions() as session:
        assert session.get_one(Study, study_id).status == StudyStatus.COMPLETED

    with sessions() as session:
        extended = extend_study(session, settings_for(migrated_database_url, tmp_path), study_id, 3)
    assert (extended.status, extended.n_trials) == ("queued", 5)
    run_worker_until_idle(migrated_database_url, tmp_path)

    with sessions() as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(select(Trial).where(Trial.study_id == study_id)).all()
    assert study.status == StudyStatus.COMPLETED
    assert study.finished_at is not None
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    best = min(trials, key=lambda t: t.value if t.value is not None else float("inf"))
    assert study.best_trial_id == best.id
    storage = optuna.storages.RDBStorage(migrated_database_url)
    try:
        frozen = optuna.load_study(study_name=study.optuna_study_name, storage=storage).trials
    finally:
        storage.engine.dispose()
    # one Optuna study throughout: the sampler of trials 2-4 saw trials 0 and 1
    assert sorted(t.number for t in frozen) == [0, 1, 2, 3, 4]
    by_number = {t.optuna_trial_id: t for t in trials}
    for trial in frozen:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.value == pytest.approx(by_number[trial.number].value)
        assert trial.params == by_number[trial.number].params

"""Studies that run one trial at a time: Optuna works on an in-memory copy in the worker and
the shared storage receives each finished trial whole (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

import service.worker.runner as runner_module
from service.db.engine import transaction
from service.db.models import Study, StudyStatus, Trial, TrialEpoch, TrialState
from service.queue.claim import claim_trial
from service.queue.reaper import hand_over
from service.queue.sql import SqlWorkQueue
from service.worker.loop import WorkerOptions, WorkerProcess, _optuna_storage
from service.worker.optuna_mirror import OPTUNA_SCHEMA, OptunaMirror, OptunaSchemaError
from service.worker.optuna_studies import MirroredStudy, OptunaStudies
from service.worker.recorder import TrialRecorder
from service.worker.runner import RunOptions, TrialRunner
from tests.test_worker import (
    add_study,
    add_worker,
    completed_result,
    sessions,
    settings_for,
    spec,
)
from trainer import run_trial as real_run_trial

__all__ = ["sessions"]  # the fixture, used by name


def shared_trials(url: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage).trials
    finally:
        storage.engine.dispose()


def test_a_one_at_a_time_study_leaves_optuna_alone_while_its_trials_train(
    migrated_database_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reports, pruning and sampling happen in memory; each finished trial reaches the shared
    storage whole: params, value, every intermediate value, linked to hpsearch's trial."""
    url = migrated_database_url
    study_spec = spec(
        sampler={"name": "tpe", "seed": 3},
        pruner={"name": "median", "n_startup_trials": 1},
        budget={"n_trials": 4, "max_epochs": 3, "max_parallel_trials": 1},
    )
    study_id = add_study(sessions, study_spec)
    worker = WorkerProcess(
        settings_for(url, tmp_path), WorkerOptions(device="cpu", exit_when_idle=True)
    )
    training = [False]
    during_training: list[str] = []

    def record(*args: Any) -> None:
        if training[0]:
            during_training.append(str(args[2]))

    def run_trial(*args: Any, **kwargs: Any) -> Any:
        training[0] = True
        try:
            return real_run_trial(*args, **kwargs)
        finally:
            training[0] = False

    monkeypatch.setattr(runner_module, "run_trial", run_trial)
    optuna_engine: Engine = worker.storage.engine
    event.listen(optuna_engine, "before_cursor_execute", record)
    try:
        assert worker.run() == 0
    finally:
        event.remove(optuna_engine, "before_cursor_execute", record)

    assert during_training == []  # no report, prune or heartbeat went to Optuna's storage
    with sessions() as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(select(Trial).where(Trial.study_id == study_id)).all()
        epochs = {
            trial.id: session.scalars(
                select(TrialEpoch.val_loss)
                .where(TrialEpoch.trial_id == trial.id)
                .order_by(TrialEpoch.epoch)
            ).all()
            for trial in trials
        }
    assert study.status == StudyStatus.COMPLETED
    frozen = {trial.number: trial for trial in shared_trials(url, study.optuna_study_name)}
    assert sorted(frozen) == [0, 1, 2, 3]
    assert all(trial.state.is_finished() for trial in frozen.values())
    assert sorted(trial.optuna_trial_id or 0 for trial in trials) == [0, 1, 2, 3]
    for trial in trials:
        assert trial.optuna_trial_id is not None
        shared = frozen[trial.optuna_trial_id]
        assert shared.params == trial.params
        if trial.state == "complete":
            assert shared.state == OptunaState.COMPLETE
            assert shared.value == pytest.approx(trial.value)
        else:
            assert shared.state == OptunaState.PRUNED
        # the median pruner's reports: val_loss at every epoch trained, epochs numbered from 1
        reported = [shared.intermediate_values[step] for step in sorted(shared.intermediate_values)]
        assert reported == pytest.approx(epochs[trial.id][: len(reported)])
        assert len(reported) == trial.epochs_run


def add_finished(study: optuna.Study, x: float) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": x}, distributions={"x": FloatDistribution(0.0, 1.0)}, value=x
        )
    )


def persist(storage: RDBStorage, mirror: OptunaMirror, finished: FrozenTrial) -> int:
    """What the recorder does with a mirrored trial's end: the write in a transaction of its
    own, then the mirror's bookkeeping."""
    with storage.engine.begin() as connection:
        number = mirror.writer(finished).write(connection)
    mirror.recorded(number)
    return number


def test_the_copy_is_reread_only_when_someone_else_ended_a_trial(
    migrated_database_url: str,
) -> None:
    storage = _optuna_storage(migrated_database_url)
    try:
        shared = optuna.create_study(study_name="mirrored", storage=storage)
        add_finished(shared, 0.5)
        mirror = OptunaMirror(storage, "mirrored", ["minimize"])
        mirror.sync(ended=1)
        assert [trial.value for trial in mirror.study.trials] == [0.5]

        add_finished(shared, 0.25)  # another worker's trial...
        reads: list[str] = []
        event.listen(storage.engine, "before_cursor_execute", lambda *a: reads.append(a[2]))
        mirror.sync(ended=1)  # ...not ended yet as far as the claim counted: no read
        assert reads == []
        assert len(mirror.study.trials) == 1
        mirror.sync(ended=2)  # now it has: the copy is rebuilt from the shared study
        assert [trial.value for trial in mirror.study.trials] == [0.5, 0.25]

        trial = mirror.study.ask({"x": FloatDistribution(0.0, 1.0)})
        trial.report(0.9, 1)
        trial.report(0.4, 2)
        trial.report(float("nan"), 3)
        trial.set_user_attr("note", {"epochs": [1, 2]})
        finished = mirror.study.tell(trial, 0.125)
        assert persist(storage, mirror, finished) == 2  # its number in the shared study
        assert mirror.ended_seen == 3  # its own trial's end will not force a re-read
        written = optuna.load_study(study_name="mirrored", storage=storage).trials[2]
        assert written.params == finished.params
        assert written.distributions == finished.distributions
        assert written.value == 0.125
        assert {step: written.intermediate_values[step] for step in (1, 2)} == {1: 0.9, 2: 0.4}
        assert math.isnan(written.intermediate_values[3])
        assert written.user_attrs == {"note": {"epochs": [1, 2]}}
        assert written.system_attrs == finished.system_attrs
        assert written.state == OptunaState.COMPLETE
        assert written.datetime_start == finished.datetime_start
        assert written.datetime_complete == finished.datetime_complete

        add_finished(shared, 0.75)  # written behind the copy's back, while the counts agree
        trial = mirror.study.ask({"x": FloatDistribution(0.0, 1.0)})
        assert persist(storage, mirror, mirror.study.tell(trial, 0.0625)) == 4
        assert mirror.ended_seen is None  # the number gave it away: re-read before next trial
        mirror.sync(ended=5)
        assert len(mirror.study.trials) == 5
    finally:
        storage.remove_session()
        storage.engine.dispose()


def take_turns(
    url: str, sessions: sessionmaker[Session], tmp_path: Path, study_spec: Any, turns: int
) -> list[int]:
    """Two workers alternate on a study, one trial each turn; how many finished trials each
    one's in-memory copy held before sampling (-1: no copy, Optuna's storage is used)."""
    worker_ids = [add_worker(sessions, pid) for pid in (1, 2)]
    storage = _optuna_storage(url)
    options = RunOptions(device="cpu", checkpoint_root=tmp_path / "checkpoints")
    runners = [
        TrialRunner(
            SqlWorkQueue(sessions), OptunaStudies(storage), worker_id, options, lambda: False
        )
        for worker_id in worker_ids
    ]
    seen_before_sampling: list[int] = []
    try:
        for turn in range(turns):
            runner = runners[turn % 2]
            claim = claim_trial(sessions, worker_ids[turn % 2])
            assert claim is not None
            side = runner.optuna.for_claim(claim, study_spec)
            mirrored = isinstance(side, MirroredStudy)
            seen_before_sampling.append(len(side.study.trials) if mirrored else -1)
            runner.run(claim)
    finally:
        storage.remove_session()
        storage.engine.dispose()
    return seen_before_sampling


def test_workers_taking_turns_on_a_study_see_each_others_trials(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Each worker's copy is made current from the shared storage before it samples, so the
    sampler sees every finished trial."""
    url = migrated_database_url
    study_spec = spec(
        sampler={"name": "tpe", "seed": 5},
        budget={"n_trials": 4, "max_epochs": 2, "max_parallel_trials": 1},
    )
    study_id = add_study(sessions, study_spec)
    assert take_turns(url, sessions, tmp_path, study_spec, 4) == [0, 1, 2, 3]
    with sessions() as session:
        assert session.get_one(Study, study_id).status == StudyStatus.COMPLETED
        study_name = session.get_one(Study, study_id).optuna_study_name
    assert [trial.number for trial in shared_trials(url, study_name)] == [0, 1, 2, 3]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_qmc_study_moves_along_its_sequence_whoever_runs_it(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """QMC keeps its position in the study's attributes, which an in-memory copy would lose
    (every trial would get the sequence's first point): its studies use Optuna's storage."""
    study_spec = spec(
        sampler={"name": "qmc", "seed": 5},
        budget={"n_trials": 4, "max_epochs": 1, "max_parallel_trials": 1},
    )
    study_id = add_study(sessions, study_spec)
    copies = take_turns(migrated_database_url, sessions, tmp_path, study_spec, 4)
    with sessions() as session:
        params = session.scalars(select(Trial.params).where(Trial.study_id == study_id)).all()
    assert len({repr(sorted(p.items())) for p in params}) == 4
    assert copies == [-1] * 4


def test_a_trial_end_is_in_optuna_only_if_its_result_is_recorded(
    migrated_database_url: str, sessions: sessionmaker[Session]
) -> None:
    """The mirrored trial's Optuna write rides in its result's transaction: a result that is
    dropped (its trial was handed over meanwhile) leaves no Optuna trial behind, so the retry
    cannot end up counted twice there; a recorded one is in both, with one number."""
    add_study(sessions, spec(budget={"n_trials": 3, "max_parallel_trials": 1}))
    worker_id = add_worker(sessions)
    storage = _optuna_storage(migrated_database_url)
    try:
        first = claim_trial(sessions, worker_id)
        assert first is not None
        assert first.ended == 0
        optuna.create_study(study_name=first.optuna_study_name, storage=storage)
        mirror = OptunaMirror(storage, first.optuna_study_name, ["minimize"])
        mirror.sync(first.ended)

        def told(value: float) -> FrozenTrial:
            trial = mirror.study.ask({"x": FloatDistribution(0.0, 1.0)})
            return mirror.study.tell(trial, value)

        with transaction(sessions) as session:  # the reaper takes the trial from its worker
            hand_over(session, session.get_one(Trial, first.trial_id), "worker lost", 2)
        recorder = TrialRecorder(SqlWorkQueue(sessions), first.trial_id, worker_id)
        dropped = recorder.finished(
            completed_result(0.5), TrialState.COMPLETE, mirror.writer(told(0.5))
        )
        mirror.recorded(dropped)
        shared = optuna.load_study(study_name=first.optuna_study_name, storage=storage)
        assert dropped is None
        assert shared.trials == []
        assert mirror.ended_seen is None  # the copy holds a trial the shared study lacks

        retry = claim_trial(sessions, worker_id)
        assert retry is not None
        assert retry.retry_of_id == first.trial_id
        assert retry.ended == 1  # the handed-over original
        mirror.sync(1)
        assert mirror.study.trials == []  # re-read: the dropped trial is gone from the copy too
        recorder = TrialRecorder(SqlWorkQueue(sessions), retry.trial_id, worker_id)
        number = recorder.finished(
            completed_result(0.25), TrialState.COMPLETE, mirror.writer(told(0.25))
        )
        mirror.recorded(number)
        assert number == 0
        assert mirror.ended_seen == 2
        [written] = optuna.load_study(study_name=first.optuna_study_name, storage=storage).trials
        with sessions() as session:
            row = session.get_one(Trial, retry.trial_id)
            assert (written.number, written.value) == (row.optuna_trial_id, row.value) == (0, 0.25)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def test_the_installed_optuna_stores_trials_in_the_schema_the_mirror_writes(
    migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails loudly on an Optuna upgrade that changes its RDB schema: the mirror inserts into
    Optuna's tables directly and must be read again against the new schema."""
    storage = _optuna_storage(migrated_database_url)
    assert storage.get_head_version() == OPTUNA_SCHEMA
    assert storage.get_current_version() == OPTUNA_SCHEMA
    storage.engine.dispose()
    monkeypatch.setattr(RDBStorage, "get_head_version", lambda _self: "v9.9.9.a")
    expected = r"RDB schema v9\.9\.9\.a; hpsearch's Optuna mirror"
    with pytest.raises(OptunaSchemaError, match=expected):
        _optuna_storage(migrated_database_url)
    monkeypatch.undo()
    # tables an older Optuna made: the worker says how to upgrade them instead of starting
    monkeypatch.setattr(RDBStorage, "get_current_version", lambda _self: "v3.0.0.a")
    with pytest.raises(OptunaSchemaError, match=r"at schema v3\.0\.0\.a.*optuna storage upgrade"):
        _optuna_storage(migrated_database_url)

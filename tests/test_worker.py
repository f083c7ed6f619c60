"""The worker, in process, on SQLite and PostgreSQL: claim, train, record, finish the study."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

import service.queue.claim as claim_module
import service.queue.reaper as reaper_module
import service.queue.sql as sql_module
from service.config import Settings
from service.db.engine import create_db_engine, make_session_factory, transaction
from service.db.models import Study, StudyStatus, Trial, TrialEpoch, TrialState, Worker, utcnow
from service.queue import study_status
from service.queue.claim import claim_trial, work_remains
from service.queue.reaper import hand_over, reap_lost_trials
from service.queue.release import release_claims
from service.queue.sql import SqlWorkQueue
from service.queue.study_status import StudyProgress, study_outcome
from service.queue.work_queue import OptunaNumber, Recorded
from service.studies.spec import StudySpec
from service.worker.loop import WorkerOptions, WorkerProcess
from service.worker.optuna_bridge import make_sampler
from service.worker.recorder import TrialRecorder
from trainer import EpochRecord, TrialResult

SPACE: dict[str, Any] = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
}


def spec(**overrides: Any) -> StudySpec:
    base: dict[str, Any] = {
        "name": "worker-test",
        "dataset": {"name": "synthetic", "n_samples": 240, "n_features": 6, "n_classes": 3},
        "model": {"hidden_units": [16]},
        "search_space": SPACE,
        "budget": {"n_trials": 3, "max_epochs": 3},
        "sampler": {"name": "random", "seed": 1},
        "pruner": {"name": "none"},
    }
    return StudySpec.model_validate({**base, **overrides})


@pytest.fixture
def sessions(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test database, with SQLite's BEGIN IMMEDIATE as the worker uses it."""
    engine = create_db_engine(migrated_database_url, immediate=True)
    yield make_session_factory(engine)
    engine.dispose()


def add_study(factory: sessionmaker[Session], study_spec: StudySpec, **columns: Any) -> int:
    with transaction(factory) as session:
        row = Study(
            name=study_spec.name,
            spec=study_spec.model_dump(mode="json"),
            direction=study_spec.primary.resolved_direction,
            objective_metric=study_spec.primary.metric,
            n_trials=study_spec.budget.n_trials,
            max_parallel_trials=study_spec.budget.max_parallel_trials,
            timeout_s=study_spec.budget.timeout_s,
            optuna_study_name=f"hps-{uuid.uuid4().hex}",
            priority=study_spec.priority,
            **columns,
        )
        session.add(row)
        session.flush()
        return row.id


def add_worker(factory: sessionmaker[Session], pid: int = 1) -> int:
    """A registered, idle worker's id."""
    with transaction(factory) as session:
        worker = Worker(host="test", pid=pid, device="cpu", status="idle")
        session.add(worker)
        session.flush()
        return worker.id


def settings_for(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        database_url=url, data_dir=tmp_path / "data", heartbeat_interval_s=0.2, **overrides
    )


def run_worker_until_idle(url: str, tmp_path: Path) -> None:
    options = WorkerOptions(device="cpu", exit_when_idle=True)
    assert WorkerProcess(settings_for(url, tmp_path), options).run() == 0


def test_a_worker_runs_a_study_to_completion(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    url = migrated_database_url
    study_id = add_study(sessions, spec())
    run_worker_until_idle(url, tmp_path)

    with sessions() as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(select(Trial).where(Trial.study_id == study_id)).all()
        epochs = session.scalars(select(TrialEpoch)).all()
        worker = session.scalars(select(Worker)).one()
    assert study.status == StudyStatus.COMPLETED
    assert study.finished_at is not None
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.epochs_run == 3 and t.diagnosis for t in trials)
    assert len(epochs) == 9  # every epoch of every trial was written
    assert all(e.data_loss is not None and e.val_data_loss is not None for e in epochs)
    assert {t.params["optimizer"] for t in trials} <= {"sgd", "adam"}
    best = min(trials, key=lambda t: t.value if t.value is not None else float("inf"))
    assert study.best_trial_id == best.id
    assert study.best_value == best.value
    for trial in trials:
        assert trial.checkpoint_path is not None
        assert Path(trial.checkpoint_path).is_file()
        assert trial.metrics is not None
        assert trial.metrics["val_data_loss"] == pytest.approx(trial.value)  # the default
    assert worker.status == "stopped"

    # A real Optuna client sees the same study: the same values, trial by trial.
    storage = optuna.storages.RDBStorage(url)
    try:
        frozen_trials = optuna.load_study(
            study_name=study.optuna_study_name, storage=storage
        ).trials
    finally:
        storage.engine.dispose()  # after the last query: a disposed engine would reconnect
    by_number = {t.optuna_trial_id: t for t in trials}
    assert len(frozen_trials) == 3
    for frozen in frozen_trials:
        assert frozen.value == pytest.approx(by_number[frozen.number].value)
        assert frozen.params == by_number[frozen.number].params


def test_claims_never_exceed_the_budget_or_the_parallel_limit(
    sessions: sessionmaker[Session],
) -> None:
    factory = sessions
    study_id = add_study(factory, spec(budget={"n_trials": 3, "max_parallel_trials": 2}))
    with transaction(factory) as session:
        session.add(Worker(host="test", pid=1, device="cpu"))
    first = claim_trial(factory, 1)
    second = claim_trial(factory, 1)
    assert first is not None
    assert second is not None
    assert claim_trial(factory, 1) is None  # two running = max_parallel_trials
    with transaction(factory) as session:
        session.get_one(Trial, first.trial_id).state = TrialState.COMPLETE
    third = claim_trial(factory, 1)
    assert third is not None
    assert [first.number, second.number, third.number] == [0, 1, 2]
    with transaction(factory) as session:
        session.get_one(Trial, second.trial_id).state = TrialState.COMPLETE
    assert claim_trial(factory, 1) is None  # n_trials slots are taken
    with factory() as session:
        assert session.get_one(Study, study_id).status == StudyStatus.RUNNING


def test_a_claim_recounts_the_slots_under_the_study_lock(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The candidates' query counts as of its start, and PostgreSQL locks a row only when it
    # reaches it: a claim committed in between is missing from those counts. Candidates read
    # with no counts at all stand in for such stale ones here.
    full = add_study(sessions, spec(name="full", budget={"n_trials": 1}))
    busy = add_study(sessions, spec(name="busy", budget={"n_trials": 5, "max_parallel_trials": 1}))
    worker_id = add_worker(sessions)
    first, second = claim_trial(sessions, worker_id), claim_trial(sessions, worker_id)
    assert first is not None
    assert second is not None
    assert (first.study_id, second.study_id) == (full, busy)
    with transaction(sessions) as session:
        session.get_one(Trial, first.trial_id).state = TrialState.COMPLETE

    def stale_candidates(locked: bool = True) -> Any:
        return (
            select(*claim_module._CANDIDATE_COLUMNS)
            .where(Study.status.in_((StudyStatus.QUEUED, StudyStatus.RUNNING)))
            .order_by(Study.id)
            .with_for_update(skip_locked=True, of=Study)
        )

    monkeypatch.setattr(claim_module, "_candidates", stale_candidates)
    assert claim_trial(sessions, worker_id) is None  # one slot taken of one; one of one running
    with sessions() as session:
        counts = [
            len(session.scalars(select(Trial).where(Trial.study_id == study)).all())
            for study in (full, busy)
        ]
    assert counts == [1, 1]
    with transaction(sessions) as session:
        session.get_one(Trial, second.trial_id).state = TrialState.COMPLETE
    third = claim_trial(sessions, worker_id)  # the busy study's slot is free again
    assert third is not None
    assert (third.study_id, third.number) == (busy, 1)


def test_higher_priority_then_older_studies_go_first(sessions: sessionmaker[Session]) -> None:
    factory = sessions
    parallel = {"n_trials": 3, "max_epochs": 3, "max_parallel_trials": 3}
    older = add_study(factory, spec(name="older", budget=parallel))
    newer_urgent = add_study(factory, spec(name="urgent", priority=5, budget=parallel))
    with transaction(factory) as session:
        session.add(Worker(host="test", pid=1, device="cpu"))
    claims = [claim_trial(factory, 1) for _ in range(4)]
    assert [c.study_id for c in claims if c is not None] == [newer_urgent] * 3 + [older]


def test_cancelled_and_finished_studies_are_not_claimed(sessions: sessionmaker[Session]) -> None:
    factory = sessions
    add_study(factory, spec(name="cancelled"), cancel_requested=True)
    add_study(factory, spec(name="done"), status=StudyStatus.COMPLETED)
    with transaction(factory) as session:
        session.add(Worker(host="test", pid=1, device="cpu"))
    assert claim_trial(factory, 1) is None


def test_a_study_that_cannot_run_fails_with_its_reason(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    gone = spec(dataset={"id": 999})  # an upload deleted after the study was queued
    study_id = add_study(sessions, gone)
    run_worker_until_idle(migrated_database_url, tmp_path)
    with sessions() as session:
        study = session.get_one(Study, study_id)
    assert study.status == StudyStatus.FAILED
    assert study.error is not None
    assert "uploaded dataset 999 no longer exists" in study.error


def test_a_diverging_trial_fails_alone_and_the_study_goes_on(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    exploding = spec(
        search_space={"learning_rate": {"type": "float", "low": 9.0, "high": 10.0}},
        fixed={"optimizer": "sgd", "initializer": "ones", "activation": "linear"},
        budget={"n_trials": 2, "max_epochs": 8},
        early_stopping=None,
    )
    study_id = add_study(sessions, exploding)
    run_worker_until_idle(migrated_database_url, tmp_path)
    with sessions() as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(select(Trial).where(Trial.study_id == study_id)).all()
    assert [t.state for t in trials] == [TrialState.FAILED, TrialState.FAILED]
    assert all(t.error is not None and "non-finite" in t.error for t in trials)
    # each trial failed alone, and the second still ran; with no result at all, the study failed
    assert study.status == StudyStatus.FAILED
    assert study.error == "none of its 2 trials completed: each failed (its error says why)"


def test_epochs_are_written_at_most_once_per_flush_interval_from_the_trial_start(
    sessions: sessionmaker[Session],
) -> None:

    study_id = add_study(sessions, spec())
    worker_id = add_worker(sessions)
    claim = claim_trial(sessions, worker_id)
    assert claim is not None
    assert claim.study_id == study_id

    def written() -> tuple[list[int], int, float | None]:
        with sessions() as session:
            epochs = session.scalars(
                select(TrialEpoch.epoch).where(TrialEpoch.trial_id == claim.trial_id)
            ).all()
            trial = session.get_one(Trial, claim.trial_id)
            first = session.scalars(
                select(TrialEpoch.val_loss).where(
                    TrialEpoch.trial_id == claim.trial_id, TrialEpoch.epoch == 1
                )
            ).first()
            return sorted(epochs), trial.epochs_run, first

    def record(epoch: int, val_loss: float = 1.0) -> EpochRecord:
        return EpochRecord(epoch, 1.0, 0.5, val_loss, 0.5, 0.01)

    recorder = TrialRecorder(SqlWorkQueue(sessions), claim.trial_id, worker_id, epoch_flush_s=3600)
    recorder.epoch(record(1))
    recorder.epoch(record(2))
    assert written() == ([], 0, None)  # within the interval from the trial's start: none
    recorder.flush_epochs()  # (as the result does)
    assert written() == ([1, 2], 2, 1.0)

    interval = 0.2
    timed = TrialRecorder(SqlWorkQueue(sessions), claim.trial_id, worker_id, epoch_flush_s=interval)
    timed.epoch(record(3))
    assert written() == ([1, 2], 2, 1.0)
    time.sleep(interval)
    timed.epoch(record(4))  # an interval after the start: epochs 3 and 4 in one write
    assert written() == ([1, 2, 3, 4], 4, 1.0)
    timed.epoch(record(5))
    assert written() == ([1, 2, 3, 4], 4, 1.0)  # then again an interval later
    time.sleep(interval)
    timed.epoch(record(6))
    assert written() == ([1, 2, 3, 4, 5, 6], 6, 1.0)

    every_epoch = TrialRecorder(SqlWorkQueue(sessions), claim.trial_id, worker_id, epoch_flush_s=0)
    every_epoch.epoch(record(1, val_loss=0.25))  # a resumed trial writes epoch 1 again
    every_epoch.epoch(record(4))
    assert written() == ([1, 2, 3, 4, 5, 6], 6, 0.25)  # upserted, never duplicated
    every_epoch.failed("a crash")
    with sessions() as session:
        assert session.get_one(Trial, claim.trial_id).state == TrialState.FAILED


def test_studies_of_neighbouring_seeds_do_not_replay_each_other() -> None:
    from service.worker.optuna_bridge import trial_seed

    seeds = {(seed, n): trial_seed(seed, n) for seed in range(5) for n in range(50)}
    assert len(set(seeds.values())) == len(seeds)  # seed s, trial n+1 is not seed s+1, trial n
    assert trial_seed(3, 7) == trial_seed(3, 7)  # a study still replays the same way
    first = make_sampler(spec(sampler={"name": "random", "seed": 0}), 1)
    second = make_sampler(spec(sampler={"name": "random", "seed": 1}), 0)
    drawn = [
        sampler.sample_independent(
            optuna.create_study(), optuna.trial.create_trial(value=0.0), "x",
            optuna.distributions.FloatDistribution(0.0, 1.0),
        )
        for sampler in (first, second)
    ]  # fmt: skip
    assert drawn[0] != drawn[1]


def test_tpe_lies_about_running_trials_only_when_trials_run_in_parallel() -> None:
    # Optuna keeps the setting private; its cost (a database read per suggest) is why it matters.
    tpe = {"name": "tpe", "seed": 0}
    alone = make_sampler(spec(sampler=tpe, budget={"n_trials": 3, "max_parallel_trials": 1}), 0)
    parallel = make_sampler(spec(sampler=tpe, budget={"n_trials": 3, "max_parallel_trials": 4}), 0)
    assert isinstance(alone, optuna.samplers.TPESampler)
    assert isinstance(parallel, optuna.samplers.TPESampler)
    assert alone._constant_liar is False
    assert parallel._constant_liar is True


def completed_result(value: float) -> TrialResult:
    """A two-epoch trial's result whose val_loss (the objective) ended at `value`."""
    return TrialResult(
        status="completed",
        objective="val_loss",
        objective_value=value,
        train=None,
        val=None,
        test=None,
        best_epoch=2,
        best=None,
        history=(
            EpochRecord(1, 1.0, 0.5, 0.5, 0.5, 0.01),
            EpochRecord(2, 0.5, 0.7, value, 0.8, 0.01),
        ),
        epochs_run=2,
        stopped_early=False,
        diagnosis=None,
        best_checkpoint=None,
        last_checkpoint=None,
        resumed_from_epoch=None,
        device="cpu",
        seed=0,
        wall_time_s=1.0,
        data_fingerprint="x",
    )


def test_a_result_that_comes_back_after_its_trial_was_handed_over_is_dropped(
    sessions: sessionmaker[Session],
) -> None:
    """A worker silent past the grace period (a network split) finds its trial handed over
    to a retry: its late result must not overwrite the failed original's record."""
    study_id = add_study(sessions, spec())
    worker_id = add_worker(sessions)
    claim = claim_trial(sessions, worker_id)
    assert claim is not None
    recorder = TrialRecorder(SqlWorkQueue(sessions), claim.trial_id, worker_id)
    recorder.started(None, {"optimizer": "adam"}, "cpu", "/nowhere/last.ckpt")
    with transaction(sessions) as session:  # what the reaper does to a lost trial
        retry = hand_over(session, session.get_one(Trial, claim.trial_id), "worker lost", 2)
        assert retry is not None
        retry_id = retry.id
    late = completed_result(0.125)
    assert recorder.finished(late, TrialState.COMPLETE, OptunaNumber(0)) is None
    with sessions() as session:
        original = session.get_one(Trial, claim.trial_id)
        study = session.get_one(Study, study_id)
        worker_row = session.get_one(Worker, worker_id)
        assert (original.state, original.error, original.value) == ("failed", "worker lost", None)
        assert session.get_one(Trial, retry_id).state == TrialState.WAITING
        assert (study.best_trial_id, study.best_value) == (None, None)
        epochs = session.scalars(
            select(TrialEpoch).where(TrialEpoch.trial_id == claim.trial_id)
        ).all()
        assert epochs == []
        assert (worker_row.status, worker_row.current_trial_id) == ("idle", None)


def test_a_result_claims_the_next_trial_in_its_transaction_until_the_study_is_done(
    sessions: sessionmaker[Session],
) -> None:
    study_id = add_study(sessions, spec(budget={"n_trials": 2}))
    worker_id = add_worker(sessions)
    claim = claim_trial(sessions, worker_id)
    numbers = []
    while claim is not None:
        numbers.append(claim.number)
        recorder = TrialRecorder(SqlWorkQueue(sessions), claim.trial_id, worker_id)
        recorder.started(None, {"optimizer": "adam"}, "cpu", "/nowhere/last.ckpt")
        recorder.finished(
            completed_result(0.5), TrialState.COMPLETE, OptunaNumber(claim.number), True
        )
        ended, claim = claim, recorder.next_claim
        with sessions() as session:
            worker_row = session.get_one(Worker, worker_id)
            study = session.get_one(Study, study_id)
            assert session.get_one(Trial, ended.trial_id).state == TrialState.COMPLETE
        if claim is not None:  # busy with the next one, which runs
            assert (worker_row.status, worker_row.current_trial_id) == ("busy", claim.trial_id)
            assert study.status == StudyStatus.RUNNING
    # the last result completed the study, and its claim did not take it again
    assert numbers == [0, 1]
    assert (worker_row.status, worker_row.current_trial_id) == ("idle", None)
    assert study.status == StudyStatus.COMPLETED


def test_a_result_written_again_after_a_lost_commit_answer_gives_its_claim_back(
    sessions: sessionmaker[Session],
) -> None:
    """The result and the next claim committed, but the answer was lost: the retried write
    finds the trial ended (and drops itself); the claim it cannot know of must not be left
    running with no one to run it until the reaper's grace period."""
    study_id = add_study(sessions, spec(budget={"n_trials": 3}))
    worker_id = add_worker(sessions)
    claim = claim_trial(sessions, worker_id)
    assert claim is not None
    recorder = TrialRecorder(SqlWorkQueue(sessions), claim.trial_id, worker_id)
    result = completed_result(0.5)
    recorder.finished(result, TrialState.COMPLETE, OptunaNumber(claim.number), True)
    lost = recorder.next_claim
    assert lost is not None
    # what @retried does when the commit's answer does not arrive: the same write again
    assert recorder.finished(result, TrialState.COMPLETE, OptunaNumber(0), True) is None
    assert recorder.next_claim is None
    with sessions() as session:
        given_back = session.get_one(Trial, lost.trial_id)
        assert (given_back.state, given_back.worker_id) == (TrialState.WAITING, None)
        worker_row = session.get_one(Worker, worker_id)
        assert (worker_row.status, worker_row.current_trial_id) == ("idle", None)
    again = claim_trial(sessions, worker_id)  # it runs next, in its own slot and number
    assert again is not None
    assert (again.trial_id, again.number, again.params) == (lost.trial_id, 1, None)
    with sessions() as session:
        numbers = session.scalars(select(Trial.number).where(Trial.study_id == study_id)).all()
    assert sorted(numbers) == [0, 1]


def test_a_claim_given_back_to_a_cancelled_study_ends_it(sessions: sessionmaker[Session]) -> None:
    study_id = add_study(sessions, spec(budget={"n_trials": 3}))
    worker_id = add_worker(sessions)
    claim = claim_trial(sessions, worker_id)
    assert claim is not None
    with transaction(sessions) as session:
        session.get_one(Study, study_id).cancel_requested = True
    with transaction(sessions) as session:
        release_claims(session, worker_id)
    with sessions() as session:
        assert session.get_one(Trial, claim.trial_id).state == TrialState.WAITING
        assert session.get_one(Study, study_id).status == StudyStatus.CANCELLED


def test_a_claim_given_back_waits_in_its_slot_and_runs_next_with_fresh_parameters(
    migrated_database_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop that comes while a trial's result claims the next one: the worker gives that
    claim back on its way out, and the next worker runs it, in its slot."""
    study_id = add_study(sessions, spec(budget={"n_trials": 2, "max_epochs": 2}))
    worker = WorkerProcess(
        settings_for(migrated_database_url, tmp_path), WorkerOptions(device="cpu")
    )

    real_finish = worker.queue.finish

    def finish_then_stop(*args: Any, **kwargs: Any) -> Recorded | None:
        recorded = real_finish(*args, **kwargs)  # the result, with the next claim
        worker.request_stop()
        return recorded

    monkeypatch.setattr(worker.queue, "finish", finish_then_stop)
    assert worker.run() == 0
    with sessions() as session:
        trials = session.scalars(
            select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
        ).all()
        assert [(t.number, t.state, t.worker_id) for t in trials] == [
            (0, TrialState.COMPLETE, worker.worker_id),
            (1, TrialState.WAITING, None),
        ]
        assert session.get_one(Worker, worker.worker_id).status == "stopped"
    monkeypatch.undo()
    run_worker_until_idle(migrated_database_url, tmp_path)
    with sessions() as session:
        trials = session.scalars(
            select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
        ).all()
        assert [(t.number, t.state) for t in trials] == [
            (0, TrialState.COMPLETE),
            (1, TrialState.COMPLETE),
        ]
        assert trials[1].retry_of_id is None
        assert set(trials[1].params) == set(SPACE)  # sampled when it ran
        assert session.get_one(Study, study_id).status == StudyStatus.COMPLETED


@pytest.mark.parametrize(
    ("objective", "best"),
    [
        ({"metric": "val_loss", "direction": "minimize"}, 0.25),
        ({"metric": "val_accuracy", "direction": "maximize"}, 0.75),
    ],
)
def test_the_study_keeps_its_best_completed_trial_and_completes_on_budget(
    sessions: sessionmaker[Session], objective: dict[str, str], best: float
) -> None:
    """A pruned trial's objective (here 0.0 and 1.0, better than any in either direction)
    never makes it the best; the study completes when its last trial ends."""
    study_id = add_study(sessions, spec(objective=objective, budget={"n_trials": 7}))
    worker_id = add_worker(sessions)
    ended: dict[int, float | None] = {}
    for value, state in [
        (0.0, TrialState.PRUNED),  # no objective: the study has no best trial after it
        (0.5, TrialState.COMPLETE),
        (0.25, TrialState.COMPLETE),
        (0.75, TrialState.COMPLETE),
        (1.0, TrialState.PRUNED),
        (0.25, TrialState.COMPLETE),  # ties keep the first trial that reached the value
        (0.75, TrialState.COMPLETE),
    ]:
        claim = claim_trial(sessions, worker_id)
        assert claim is not None
        recorder = TrialRecorder(SqlWorkQueue(sessions), claim.trial_id, worker_id)
        recorder.started(claim.number, {"optimizer": "adam"}, "cpu", "/nowhere/last.ckpt")
        with sessions() as session:
            assert session.get_one(Study, study_id).status == StudyStatus.RUNNING
            assert session.get_one(Worker, worker_id).current_trial_id == claim.trial_id
        result = completed_result(value)
        if state == TrialState.PRUNED:
            result = dataclasses.replace(result, status="pruned")
        assert recorder.finished(result, state, OptunaNumber(claim.number)) == claim.number
        ended[claim.trial_id] = value if state == TrialState.COMPLETE else None
        if len(ended) == 1:
            with sessions() as session:
                assert session.get_one(Study, study_id).best_trial_id is None
    with sessions() as session:
        study = session.get_one(Study, study_id)
        trials = {trial.id: trial.value for trial in session.scalars(select(Trial))}
        worker = session.get_one(Worker, worker_id)
    assert trials == ended
    first_best = next(trial_id for trial_id, value in ended.items() if value == best)
    assert (study.best_trial_id, study.best_value) == (first_best, best)
    assert study.status == StudyStatus.COMPLETED
    assert study.finished_at is not None
    assert (worker.status, worker.current_trial_id) == ("idle", None)


NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("progress", "running", "finished", "outcome"),
    [
        (StudyProgress("running", False, 4, None, None), 0, 3, None),
        (StudyProgress("running", False, 4, None, None), 0, 4, ("completed", None)),
        (StudyProgress("running", False, 4, None, None), 1, 4, None),  # one still runs
        (StudyProgress("running", True, 4, None, None), 0, 1, ("cancelled", None)),
        (StudyProgress("queued", True, 4, None, None), 0, 0, ("cancelled", None)),
        (StudyProgress("cancelled", True, 4, None, None), 0, 0, None),  # already over
        (StudyProgress("running", False, 4, 60.0, NOW - timedelta(seconds=59)), 0, 2, None),
        (
            StudyProgress("running", False, 4, 60.0, NOW - timedelta(seconds=61)),
            0,
            2,
            ("completed", "time budget of 60 s ran out after 2 trials"),
        ),
    ],
)
def test_a_study_is_over_when_its_budget_cancel_or_time_says_so(
    progress: StudyProgress,
    running: int,
    finished: int,
    outcome: tuple[str, str | None] | None,
) -> None:
    assert study_outcome(progress, running, finished, NOW) == outcome


def test_a_study_whose_trials_all_failed_failed() -> None:
    done = StudyProgress("running", False, 4, None, None)
    why = "none of its 4 trials completed: each failed (its error says why)"
    assert study_outcome(done, 0, 4, NOW, succeeded=0) == ("failed", why)
    assert study_outcome(done, 0, 4, NOW, succeeded=1) == ("completed", None)
    out_of_time = StudyProgress("running", False, 4, 60.0, NOW - timedelta(seconds=61))
    assert study_outcome(out_of_time, 0, 2, NOW, succeeded=0) == (
        "failed",
        "time budget of 60 s ran out after 2 trials; "
        "none of its 2 trials completed: each failed (its error says why)",
    )
    cancelled = StudyProgress("running", True, 4, None, None)
    assert study_outcome(cancelled, 0, 2, NOW, succeeded=0) == ("cancelled", None)


def test_a_trial_ending_while_the_reaper_hands_over_another_still_ends_the_study(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled study's last two trials end at once: one recorded by its worker, one
    handed over by the reaper. Each counts the trials after the other has committed (the
    reaper waits for the study row), so the second of them ends the study; were both to count
    the other's trial as still running, the study would stay running for good."""
    study_id = add_study(sessions, spec(budget={"n_trials": 4, "max_parallel_trials": 2}))
    alive, lost = add_worker(sessions, pid=1), add_worker(sessions, pid=2)
    ending, lost_claim = claim_trial(sessions, alive), claim_trial(sessions, lost)
    assert ending is not None
    assert lost_claim is not None
    with transaction(sessions) as session:
        session.get_one(Study, study_id).cancel_requested = True
        session.get_one(Trial, lost_claim.trial_id).heartbeat_at = utcnow() - timedelta(hours=1)

    holding_the_study, go_on = threading.Event(), threading.Event()
    real_finish_if_done = study_status.finish_if_done

    def finish_when_told(*args: Any) -> None:
        holding_the_study.set()  # the result's transaction holds the study's row here
        assert go_on.wait(10)
        real_finish_if_done(*args)

    monkeypatch.setattr(sql_module, "finish_if_done", finish_when_told)
    recorder = TrialRecorder(SqlWorkQueue(sessions), ending.trial_id, alive)
    result = threading.Thread(
        target=recorder.finished,
        args=(completed_result(0.5), TrialState.COMPLETE, OptunaNumber(0)),
    )
    reaped: list[int] = []
    reaper = threading.Thread(
        target=lambda: reaped.extend(lost.trial_id for lost in reap_lost_trials(sessions, 60.0, 2))
    )
    result.start()
    assert holding_the_study.wait(10)
    reaper.start()
    reaper.join(0.5)
    waited = reaper.is_alive()
    go_on.set()
    result.join(10)
    reaper.join(10)
    assert waited  # the reaper waited for the study's row
    assert reaped == [lost_claim.trial_id]
    with sessions() as session:
        study = session.get_one(Study, study_id)
        states = {trial.id: trial.state for trial in session.scalars(select(Trial))}
    assert states[ending.trial_id] == TrialState.COMPLETE
    assert states[lost_claim.trial_id] == TrialState.FAILED
    assert study.status == StudyStatus.CANCELLED
    assert study.finished_at is not None


def test_a_retry_queued_while_another_trial_is_claimed_takes_the_next_free_number(
    sessions: sessionmaker[Session],
) -> None:
    """A worker stopping (SIGTERM) queues its trial's retry while another worker claims a
    trial of the same study: the retry waits for the claim and numbers itself after it."""
    study_id = add_study(sessions, spec(budget={"n_trials": 4, "max_parallel_trials": 2}))
    worker_id = add_worker(sessions)
    claim = claim_trial(sessions, worker_id)
    assert claim is not None
    recorder = TrialRecorder(SqlWorkQueue(sessions), claim.trial_id, worker_id)
    stopped = completed_result(0.5)
    failures: list[BaseException] = []

    def hand_it_over() -> None:
        try:
            recorder.handed_over(
                stopped, "worker stopped (SIGTERM); retry queued", 2, OptunaNumber(0)
            )
        except BaseException as error:  # reported below, not as a thread's stray exception
            failures.append(error)

    stopping = threading.Thread(target=hand_it_over)
    with transaction(sessions) as session:  # a claim in flight: the study locked, a trial added
        session.get_one(Study, study_id, with_for_update=True)
        session.add(
            Trial(study_id=study_id, number=1, state=TrialState.RUNNING, started_at=utcnow())
        )
        session.flush()
        stopping.start()
        stopping.join(0.5)
        waited = stopping.is_alive()
    stopping.join(10)
    assert failures == []
    assert waited
    with sessions() as session:
        retry = session.scalars(select(Trial).where(Trial.retry_of_id == claim.trial_id)).one()
    assert (retry.number, retry.state) == (2, TrialState.WAITING)


def test_the_database_refuses_a_second_retry_of_one_trial(
    sessions: sessionmaker[Session],
) -> None:
    """Slots are counted as a study's trials less its retries, which holds while each trial
    is retried at most once: the database enforces it."""
    add_study(sessions, spec())
    claim = claim_trial(sessions, add_worker(sessions))
    assert claim is not None
    with transaction(sessions) as session:
        assert hand_over(session, session.get_one(Trial, claim.trial_id), "worker lost", 2)
    with pytest.raises(IntegrityError), transaction(sessions) as session:
        hand_over(session, session.get_one(Trial, claim.trial_id), "worker lost again", 2)
    with sessions() as session:
        retried = select(Trial).where(Trial.retry_of_id == claim.trial_id)
        assert len(session.scalars(retried).all()) == 1


def test_a_worker_that_stops_when_idle_does_not_mistake_a_locked_study_for_no_work(
    sessions: sessionmaker[Session], migrated_database_url: str
) -> None:
    """PostgreSQL's claim skips a study another worker is claiming from at that moment;
    `work_remains` still sees it, so `--exit-when-idle` waits instead of stopping early. A
    study past its time budget is no work."""
    assert not work_remains(sessions)
    study_id = add_study(sessions, spec())
    assert work_remains(sessions)
    if migrated_database_url.startswith("postgresql"):
        with transaction(sessions) as other_claim:
            other_claim.get_one(Study, study_id, with_for_update=True)
            assert claim_trial(sessions, add_worker(sessions)) is None  # skipped, locked
            assert work_remains(sessions)
    with transaction(sessions) as session:
        study = session.get_one(Study, study_id)
        study.timeout_s = 60.0
        study.started_at = utcnow() - timedelta(seconds=61)
    assert not work_remains(sessions)


def test_a_worker_that_met_a_locked_study_claims_it_soon_after_not_a_poll_later(
    sessions: sessionmaker[Session], migrated_database_url: str, tmp_path: Path
) -> None:
    """Another worker's claim or result holds a study's row for a few milliseconds;
    PostgreSQL's claim skips it (SQLite's waits for the write lock). A worker that found
    only such work tries again soon instead of sleeping its poll interval."""
    study_id = add_study(sessions, spec(budget={"n_trials": 1, "max_epochs": 1}))
    worker = WorkerProcess(
        settings_for(migrated_database_url, tmp_path),
        WorkerOptions(device="cpu", poll_interval_s=120.0, max_trials=1),
    )
    thread = threading.Thread(target=worker.run)
    with transaction(sessions) as other_worker:
        other_worker.get_one(Study, study_id, with_for_update=True)
        thread.start()
        time.sleep(0.5)  # its first claim meets the lock
    thread.join(timeout=60)
    assert not thread.is_alive(), "the worker waited for its poll interval"
    with sessions() as session:
        states = session.scalars(select(Trial.state).where(Trial.study_id == study_id)).all()
    assert states == [TrialState.COMPLETE]


def test_studies_over_with_no_trial_running_are_ended_by_the_reaper(
    sessions: sessionmaker[Session],
) -> None:
    """A trial that ended just before the time budget ran out, then claims that skip the
    study: no trial's end would finish it. Nor one whose cancel came while only a retry
    waited. The reaper's round ends both; a study with a trial running is left to it."""
    past = {"status": StudyStatus.RUNNING, "started_at": utcnow() - timedelta(seconds=61)}
    minute, hour = ({"n_trials": 3, "timeout_s": seconds} for seconds in (60, 3600))
    timed_out = add_study(sessions, spec(name="timed-out", budget=minute), **past)
    cancelled = add_study(sessions, spec(name="cancelled"), cancel_requested=True, **past)
    still_running = add_study(sessions, spec(name="running", budget=minute), **past)
    within_budget = add_study(sessions, spec(name="in time", budget=hour), **past)
    with transaction(sessions) as session:
        for study_id in (timed_out, cancelled, still_running, within_budget):
            session.add(Trial(study_id=study_id, number=0, state=TrialState.COMPLETE))
        session.add(Trial(study_id=timed_out, number=1, state=TrialState.WAITING))
        session.add(Trial(study_id=still_running, number=1, state=TrialState.RUNNING))
    reaper_module.end_stalled_studies(sessions)
    ended = {}
    with sessions() as session:
        for study_id in (timed_out, cancelled, still_running, within_budget):
            study = session.get_one(Study, study_id)
            ended[study_id] = (study.status, study.error)
    assert ended == {
        timed_out: (StudyStatus.COMPLETED, "time budget of 60 s ran out after 1 trials"),
        cancelled: (StudyStatus.CANCELLED, None),
        still_running: (StudyStatus.RUNNING, None),
        within_budget: (StudyStatus.RUNNING, None),
    }

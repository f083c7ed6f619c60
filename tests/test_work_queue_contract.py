"""One contract for every `WorkQueue`: the in-memory fake, SQLite and PostgreSQL.

Each test runs once per implementation through a harness: the queue, plus the test's own
set-up (studies, cancels, silent heartbeats) and read-back (rows in the memory queue's shapes),
done for SQL through the ORM. A test that passes on memory but fails on SQL (or the reverse)
is a place where the fake lies.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import create_db_engine, make_session_factory, transaction
from service.db.models import Dataset, Study, Trial, TrialEpoch, Worker, utcnow
from service.queue.memory import (
    EPOCH_COLUMNS,
    InMemoryWorkQueue,
    MemoryStudy,
    MemoryTrial,
    MemoryWorker,
)
from service.queue.sql import SqlWorkQueue
from service.queue.work_queue import (
    Claim,
    Interruption,
    LostTrial,
    OptunaNumber,
    OptunaWrite,
    TrialOutcome,
    TrialStart,
    UploadedData,
    WorkQueue,
)
from service.states import StudyStatus, TrialState
from tests.conftest import create_schema, fresh_postgres_database

SPEC: dict[str, Any] = {
    "name": "contract",
    "search_space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1}},
}
PARAMS: dict[str, Any] = {"learning_rate": 0.01}

View = TypeVar("View", MemoryStudy, MemoryTrial, MemoryWorker)


class Harness(Protocol):
    """A queue and the test's side of it (see the module's docstring)."""

    kind: str
    queue: WorkQueue

    def add_study(
        self,
        *,
        n_trials: int,
        max_parallel_trials: int = 1,
        priority: int = 0,
        timeout_s: float | None = None,
        direction: str = "minimize",
        status: str = StudyStatus.QUEUED,
        cancel_requested: bool = False,
        created_at: datetime | None = None,
        started_at: datetime | None = None,
        spec: dict[str, Any] | None = None,
    ) -> int: ...

    def cancel(self, study_id: int) -> None: ...

    def add_dataset(self, *, location: str, target: str | None, sha256: str) -> int: ...

    def age_heartbeat(self, trial_id: int, seconds: float) -> None: ...

    def age_worker_heartbeat(self, worker_id: int, seconds: float) -> None: ...

    def study(self, study_id: int) -> MemoryStudy: ...

    def trial(self, trial_id: int) -> MemoryTrial: ...

    def trials(self, study_id: int) -> list[MemoryTrial]: ...

    def epochs(self, trial_id: int) -> list[dict[str, Any]]: ...

    def worker(self, worker_id: int) -> MemoryWorker: ...


class MemoryHarness:
    """The fake's own set-up and views."""

    kind = "memory"

    def __init__(self) -> None:
        self.memory = InMemoryWorkQueue()
        self.queue: WorkQueue = self.memory

    def add_study(self, spec: dict[str, Any] | None = None, **columns: Any) -> int:
        return self.memory.add_study(spec or SPEC, **columns)

    def cancel(self, study_id: int) -> None:
        self.memory.cancel(study_id)

    def add_dataset(self, *, location: str, target: str | None, sha256: str) -> int:
        return self.memory.add_dataset(location=location, target=target, sha256=sha256)

    def age_heartbeat(self, trial_id: int, seconds: float) -> None:
        self.memory.age_heartbeat(trial_id, seconds)

    def age_worker_heartbeat(self, worker_id: int, seconds: float) -> None:
        self.memory.age_worker_heartbeat(worker_id, seconds)

    def study(self, study_id: int) -> MemoryStudy:
        return self.memory.study(study_id)

    def trial(self, trial_id: int) -> MemoryTrial:
        return self.memory.trial(trial_id)

    def trials(self, study_id: int) -> list[MemoryTrial]:
        return self.memory.trials(study_id)

    def epochs(self, trial_id: int) -> list[dict[str, Any]]:
        return self.memory.epochs(trial_id)

    def worker(self, worker_id: int) -> MemoryWorker:
        return self.memory.worker(worker_id)


def _view(shape: type[View], row: object) -> View:
    """An ORM row as the memory queue's dataclass of the same field names."""
    fields = dataclasses.fields(shape)
    return shape(**{field.name: getattr(row, field.name) for field in fields})


class SqlHarness:
    """Rows written and read through the ORM, in the memory queue's shapes."""

    def __init__(self, kind: str, factory: sessionmaker[Session]) -> None:
        self.kind = kind
        self.factory = factory
        self.queue: WorkQueue = SqlWorkQueue(factory)

    def add_study(
        self,
        *,
        n_trials: int,
        max_parallel_trials: int = 1,
        priority: int = 0,
        timeout_s: float | None = None,
        direction: str = "minimize",
        status: str = StudyStatus.QUEUED,
        cancel_requested: bool = False,
        created_at: datetime | None = None,
        started_at: datetime | None = None,
        spec: dict[str, Any] | None = None,
    ) -> int:
        with transaction(self.factory) as session:
            row = Study(
                name=SPEC["name"],
                spec=spec or SPEC,
                direction=direction,
                objective_metric="val_loss",
                n_trials=n_trials,
                max_parallel_trials=max_parallel_trials,
                timeout_s=timeout_s,
                optuna_study_name=f"hps-{uuid.uuid4().hex}",
                priority=priority,
                status=status,
                cancel_requested=cancel_requested,
                created_at=created_at or utcnow(),
                started_at=started_at,
            )
            session.add(row)
            session.flush()
            return row.id

    def cancel(self, study_id: int) -> None:
        with transaction(self.factory) as session:
            session.execute(update(Study).where(Study.id == study_id).values(cancel_requested=True))

    def add_dataset(self, *, location: str, target: str | None, sha256: str) -> int:
        with transaction(self.factory) as session:
            row = Dataset(
                name="upload",
                format="csv",
                path=location,
                size_bytes=1,
                sha256=sha256,
                target=target,
                n_rows=1,
                n_features=1,
                n_classes=2,
                task="classification",
            )
            session.add(row)
            session.flush()
            return row.id

    def age_heartbeat(self, trial_id: int, seconds: float) -> None:
        then = utcnow() - timedelta(seconds=seconds)
        with transaction(self.factory) as session:
            session.execute(update(Trial).where(Trial.id == trial_id).values(heartbeat_at=then))

    def age_worker_heartbeat(self, worker_id: int, seconds: float) -> None:
        then = utcnow() - timedelta(seconds=seconds)
        with transaction(self.factory) as session:
            session.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=then))

    def study(self, study_id: int) -> MemoryStudy:
        with self.factory() as session:
            return _view(MemoryStudy, session.get_one(Study, study_id))

    def trial(self, trial_id: int) -> MemoryTrial:
        with self.factory() as session:
            return _view(MemoryTrial, session.get_one(Trial, trial_id))

    def trials(self, study_id: int) -> list[MemoryTrial]:
        with self.factory() as session:
            rows = session.scalars(
                select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
            )
            return [_view(MemoryTrial, row) for row in rows]

    def epochs(self, trial_id: int) -> list[dict[str, Any]]:
        with self.factory() as session:
            rows = session.scalars(
                select(TrialEpoch).where(TrialEpoch.trial_id == trial_id).order_by(TrialEpoch.epoch)
            )
            return [{name: getattr(row, name) for name in EPOCH_COLUMNS} for row in rows]

    def worker(self, worker_id: int) -> MemoryWorker:
        with self.factory() as session:
            return _view(MemoryWorker, session.get_one(Worker, worker_id))


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "memory":
        yield MemoryHarness()
        return
    sqlite_url = f"sqlite:///{tmp_path / 'hps.db'}"
    database: AbstractContextManager[str] = (
        fresh_postgres_database() if request.param == "postgres" else nullcontext(sqlite_url)
    )
    with database as url:  # (PostgreSQL: skipped without a server, a failure under CI)
        create_schema(url)
        engine = create_db_engine(url, immediate=True)  # as the worker's (see test_worker)
        try:
            yield SqlHarness(request.param, make_session_factory(engine))
        finally:
            engine.dispose()


# --- helpers -----------------------------------------------------------------------------------


def worker_of(h: Harness, pid: int = 1) -> int:
    return h.queue.register_worker("test", pid, "cpu")


def claimed(h: Harness, worker_id: int) -> Claim:
    claim = h.queue.claim(worker_id)
    assert claim is not None
    return claim


def started(h: Harness, worker_id: int, number: int | None = None) -> Claim:
    """A claimed trial that trains (its parameters sampled, its resume checkpoint named)."""
    claim = claimed(h, worker_id)
    h.queue.start(claim.trial_id, start_of(claim, number))
    return claim


def start_of(claim: Claim, number: int | None = None) -> TrialStart:
    optuna_number = claim.number if number is None else number
    location = f"/ckpt/{claim.study_id}/{claim.number}/last.ckpt"
    return TrialStart(optuna_number, dict(PARAMS), "cpu", location)


def epoch(n: int, val_loss: float = 1.0) -> dict[str, Any]:
    return {"epoch": n, "loss": 2.0, "val_loss": val_loss, "kernel_grad_norms": [0.5, 0.25]}


def completed(value: float | None, **columns: Any) -> TrialOutcome:
    return TrialOutcome(TrialState.COMPLETE, value, {"epochs_run": 2, **columns})


def pruned() -> TrialOutcome:
    return TrialOutcome(TrialState.PRUNED, None, {"epochs_run": 1})


def stop(epochs_run: int = 1, checkpoint: str | None = "/ckpt/last.ckpt") -> Interruption:
    return Interruption("worker stopped (SIGTERM)", epochs_run, checkpoint, 3.5)


def states(h: Harness, study_id: int) -> list[tuple[int, str]]:
    return [(trial.number, trial.state) for trial in h.trials(study_id)]


# --- claims ------------------------------------------------------------------------------------


def test_claims_respect_n_trials_and_max_parallel_trials(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=3, max_parallel_trials=2)
    worker = worker_of(h)
    first, second = claimed(h, worker), claimed(h, worker)
    assert h.queue.claim(worker) is None  # two running = max_parallel_trials
    h.queue.start(first.trial_id, start_of(first))
    h.queue.finish(first.trial_id, worker, completed(0.5), OptunaNumber(first.number))
    third = claimed(h, worker)
    assert [first.number, second.number, third.number] == [0, 1, 2]
    h.queue.start(second.trial_id, start_of(second))
    h.queue.finish(second.trial_id, worker, completed(0.5), OptunaNumber(second.number))
    assert h.queue.claim(worker) is None  # the n_trials slots are taken
    assert not h.queue.work_remains()
    assert h.study(study_id).status == StudyStatus.RUNNING


def test_claims_go_to_higher_priority_then_older_studies(harness: Harness) -> None:
    h = harness
    now = utcnow()
    newer = h.add_study(n_trials=1, created_at=now - timedelta(seconds=10))
    older = h.add_study(n_trials=1, created_at=now - timedelta(seconds=20))  # added after
    urgent = h.add_study(n_trials=1, priority=5, created_at=now)
    workers = [worker_of(h, pid) for pid in range(4)]
    claims = [h.queue.claim(worker) for worker in workers]
    assert [None if c is None else c.study_id for c in claims] == [urgent, older, newer, None]


def test_concurrent_claims_never_exceed_the_budget(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=5, max_parallel_trials=20)
    workers = [worker_of(h, pid) for pid in range(8)]
    numbers: list[int] = []
    errors: list[BaseException] = []

    def claim_all(worker: int) -> None:
        try:
            while True:
                claim = h.queue.claim(worker)
                if claim is not None:
                    numbers.append(claim.number)
                elif not h.queue.work_remains():  # (PostgreSQL: it may have skipped a lock)
                    return
        except BaseException as error:  # surfaced below: a thread's failure is the test's
            errors.append(error)

    threads = [threading.Thread(target=claim_all, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(numbers) == [0, 1, 2, 3, 4]
    assert len(h.trials(study_id)) == 5


def test_claim_more_takes_only_the_given_study(harness: Harness) -> None:
    h = harness
    other = h.add_study(n_trials=5, max_parallel_trials=5, priority=9)
    pack = h.add_study(n_trials=2, max_parallel_trials=5)
    worker = worker_of(h)
    first = h.queue.claim_more(worker, pack)
    second = h.queue.claim_more(worker, pack)
    assert first is not None
    assert second is not None
    assert (first.study_id, second.study_id, second.number) == (pack, pack, 1)
    assert h.queue.claim_more(worker, pack) is None  # its n_trials slots are taken
    assert h.trials(other) == []
    assert h.worker(worker).current_trial_id == second.trial_id


@pytest.mark.parametrize(
    "ended",
    [
        {"cancel_requested": True},
        {"status": StudyStatus.COMPLETED},
        {"status": StudyStatus.FAILED},
        {"status": StudyStatus.CANCELLED},
    ],
)
def test_cancelled_and_ended_studies_are_not_claimed(
    harness: Harness, ended: dict[str, Any]
) -> None:
    h = harness
    h.add_study(n_trials=3, **ended)
    worker = worker_of(h)
    assert h.queue.claim(worker) is None
    assert not h.queue.work_remains()
    h.add_study(n_trials=3)
    assert h.queue.work_remains()


def test_a_study_cancelled_while_running_is_not_claimed_again(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=3, max_parallel_trials=2)
    worker = worker_of(h)
    claimed(h, worker)
    h.cancel(study_id)
    assert h.queue.claim(worker) is None
    assert h.study(study_id).cancel_requested


def test_the_first_claim_starts_the_study_and_makes_the_worker_busy(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=2, direction="maximize")
    worker = worker_of(h)
    assert (h.study(study_id).status, h.study(study_id).started_at) == (StudyStatus.QUEUED, None)
    claim = claimed(h, worker)
    study = h.study(study_id)
    assert study.status == StudyStatus.RUNNING
    assert study.started_at is not None
    assert claim == Claim(
        study_id=study_id,
        trial_id=claim.trial_id,
        number=0,
        optuna_study_name=study.optuna_study_name,
        spec=SPEC,
        direction="maximize",
        ended=0,  # one trial at a time: the ended count comes with the claim
    )
    trial = h.trial(claim.trial_id)
    assert (trial.state, trial.worker_id, trial.device) == (TrialState.RUNNING, worker, None)
    assert trial.heartbeat_at is not None
    assert (h.worker(worker).status, h.worker(worker).current_trial_id) == ("busy", trial.id)


def test_a_parallel_study_s_claim_has_no_ended_count(harness: Harness) -> None:
    h = harness
    h.add_study(n_trials=2, max_parallel_trials=2)
    assert claimed(h, worker_of(h)).ended is None


def test_a_study_past_its_time_budget_is_not_claimed(harness: Harness) -> None:
    h = harness
    long_ago = utcnow() - timedelta(seconds=61)
    running: dict[str, Any] = {"status": StudyStatus.RUNNING, "timeout_s": 60.0}
    h.add_study(n_trials=3, priority=1, started_at=long_ago, **running)
    worker = worker_of(h)
    assert h.queue.claim(worker) is None
    assert not h.queue.work_remains()
    in_time = h.add_study(n_trials=3, started_at=utcnow() - timedelta(seconds=10), **running)
    assert claimed(h, worker).study_id == in_time


def test_a_waiting_retry_is_claimed_before_a_new_trial(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=3)
    worker = worker_of(h)
    first = started(h, worker)
    h.queue.hand_over(first.trial_id, worker, stop(), 2, OptunaNumber(0))
    retry = claimed(h, worker_of(h, 2))
    assert (retry.number, retry.retry_of_id) == (1, first.trial_id)
    assert (retry.params, retry.resume_from, retry.seed_number) == (
        PARAMS,
        "/ckpt/last.ckpt",
        0,
    )
    assert retry.ended == 1
    # the retry of a retry trains with its chain's first seed too
    h.queue.start(retry.trial_id, start_of(retry))
    h.queue.hand_over(retry.trial_id, worker, stop(checkpoint="/ckpt/2"), 2, OptunaNumber(1))
    again = claimed(h, worker)
    assert (again.number, again.retry_of_id, again.seed_number) == (2, retry.trial_id, 0)
    assert (again.resume_from, again.seed_offset) == ("/ckpt/2", 0)
    # retries took their originals' slots: two slots taken of three, the third is new
    h.queue.start(again.trial_id, start_of(again))
    h.queue.finish(again.trial_id, worker, completed(0.5), OptunaNumber(2))
    new = claimed(h, worker)
    assert (new.number, new.retry_of_id, new.params, new.seed_number) == (3, None, None, None)
    assert h.queue.claim(worker_of(h, 3)) is None
    assert states(h, study_id) == [
        (0, TrialState.FAILED),
        (1, TrialState.FAILED),
        (2, TrialState.COMPLETE),
        (3, TrialState.RUNNING),
    ]


# --- confirmations -----------------------------------------------------------------------------


def confirming(h: Harness, n_trials: int, top: int, seeds: int, **columns: Any) -> int:
    return h.add_study(
        n_trials=n_trials, spec={**SPEC, "confirm": {"top": top, "seeds": seeds}}, **columns
    )


def searched(h: Harness, worker: int, learning_rate: float, value: float | None) -> Claim:
    """A searched (not confirming) trial claimed, started with `learning_rate` and finished
    with `value` (None: pruned)."""
    claim = claimed(h, worker)
    assert (claim.confirmation, claim.params) == (False, None)
    params = {"learning_rate": learning_rate}
    h.queue.start(claim.trial_id, TrialStart(claim.number, params, "cpu", "/ckpt/x"))
    outcome = pruned() if value is None else completed(value)
    h.queue.finish(claim.trial_id, worker, outcome, OptunaNumber(claim.number))
    return claim


@pytest.mark.parametrize(("direction", "sign"), [("minimize", 1.0), ("maximize", -1.0)])
def test_the_last_slots_retrain_the_best_configurations_in_turn(
    harness: Harness, direction: str, sign: float
) -> None:
    h = harness
    study_id = confirming(h, 9, top=2, seeds=2, max_parallel_trials=5, direction=direction)
    worker = worker_of(h)
    # five searched trials: 0.03 is best, then 0.04 (drawn twice: one configuration, not two
    # of the top); 0.05 pruned
    for learning_rate, value in ((0.01, 0.5), (0.03, 0.3), (0.04, 0.4), (0.04, 0.45), (0.05, None)):
        searched(h, worker, learning_rate, None if value is None else sign * value)
    # the last 2 × 2 slots, claimed at once: each configuration gets a seed before any a second
    confirmations = [claimed(h, worker_of(h, pid)) for pid in (2, 3, 4, 5)]
    assert [c.params for c in confirmations] == [
        {"learning_rate": 0.03},
        {"learning_rate": 0.04},
        {"learning_rate": 0.03},
        {"learning_rate": 0.04},
    ]
    assert all(c.confirmation and c.retry_of_id is None for c in confirmations)
    assert len({c.seed_offset for c in confirmations}) == 4  # each its own seed
    assert h.queue.claim(worker_of(h, 6)) is None  # the budget is spent
    rows = h.trials(study_id)[5:]
    assert [(row.confirmation, row.params) for row in rows] == [
        (True, c.params) for c in confirmations
    ]


def test_a_confirmation_handed_over_is_retried_as_a_confirmation(harness: Harness) -> None:
    h = harness
    confirming(h, 2, top=1, seeds=1)
    worker = worker_of(h)
    searched(h, worker, 0.02, 0.5)
    confirmation = claimed(h, worker)
    assert (confirmation.confirmation, confirmation.params) == (True, {"learning_rate": 0.02})
    assert confirmation.params is not None
    start = TrialStart(1, confirmation.params, "cpu", "/ckpt/1")
    h.queue.start(confirmation.trial_id, start)
    h.queue.hand_over(confirmation.trial_id, worker, stop(), 2, OptunaNumber(1))
    retry = claimed(h, worker)
    assert (retry.retry_of_id, retry.confirmation) == (confirmation.trial_id, True)
    assert retry.params == {"learning_rate": 0.02}
    assert retry.seed_offset == confirmation.seed_offset


def test_a_confirmation_given_back_keeps_its_configuration(harness: Harness) -> None:
    h = harness
    confirming(h, 3, top=1, seeds=2)
    worker = worker_of(h)
    searched(h, worker, 0.02, 0.5)
    confirmation = claimed(h, worker)
    h.queue.release(worker)  # never started: it waits in its slot
    again = claimed(h, worker)
    assert (again.trial_id, again.confirmation) == (confirmation.trial_id, True)
    assert again.params == {"learning_rate": 0.02}


def test_a_confirmation_slot_waits_while_a_searched_trial_runs(harness: Harness) -> None:
    h = harness
    confirming(h, 3, top=1, seeds=1, max_parallel_trials=3)
    searchers = [worker_of(h, pid) for pid in (1, 2)]
    first, second = (claimed(h, searcher) for searcher in searchers)
    worker = worker_of(h, 3)
    assert h.queue.claim(worker) is None  # slot 2 confirms: it waits for the whole search
    assert h.queue.work_remains()  # (so a worker that stops when idle keeps polling)
    for claim, searcher, rate, value in (
        (first, searchers[0], 0.01, 0.5),
        (second, searchers[1], 0.02, 0.3),
    ):
        start = TrialStart(claim.number, {"learning_rate": rate}, "cpu", "/ckpt/x")
        h.queue.start(claim.trial_id, start)
        h.queue.finish(claim.trial_id, searcher, completed(value), OptunaNumber(claim.number))
        if claim is first:
            assert h.queue.claim(worker) is None  # the second still runs
    confirmation = claimed(h, worker)
    assert (confirmation.confirmation, confirmation.params) == (True, {"learning_rate": 0.02})


def test_a_confirmation_slot_with_no_finished_search_is_searched(harness: Harness) -> None:
    h = harness
    study_id = confirming(h, 2, top=1, seeds=1)
    worker = worker_of(h)
    searched(h, worker, 0.01, None)  # pruned: nothing to confirm, and nothing runs
    last = claimed(h, worker)
    assert (last.confirmation, last.params) == (False, None)
    assert not any(row.confirmation for row in h.trials(study_id))


def test_a_confirmation_handed_over_holds_its_seed_through_its_retry(harness: Harness) -> None:
    h = harness
    confirming(h, 6, top=2, seeds=2, max_parallel_trials=6)
    worker = worker_of(h)
    searched(h, worker, 0.01, 0.3)
    searched(h, worker, 0.02, 0.4)
    first_worker = worker_of(h, 2)
    first, second = claimed(h, first_worker), claimed(h, worker_of(h, 3))
    assert [first.params, second.params] == [{"learning_rate": 0.01}, {"learning_rate": 0.02}]
    assert first.params is not None
    h.queue.start(first.trial_id, TrialStart(2, first.params, "cpu", "/ckpt/2"))
    h.queue.hand_over(first.trial_id, first_worker, stop(), 2, OptunaNumber(2))
    retry = claimed(h, worker_of(h, 4))
    assert (retry.retry_of_id, retry.params) == (first.trial_id, first.params)
    # 0.01 has its draw and one confirmation (the retry, not also the attempt it retries), as
    # 0.02 has: the tie goes to the better configuration
    assert claimed(h, worker_of(h, 5)).params == {"learning_rate": 0.01}


def test_a_configuration_that_diverged_on_a_confirmation_gives_its_seeds_to_the_next(
    harness: Harness,
) -> None:
    h = harness
    confirming(h, 7, top=2, seeds=2, max_parallel_trials=7)
    worker = worker_of(h)
    for learning_rate, value in ((0.01, 0.3), (0.02, 0.4), (0.03, 0.5)):
        searched(h, worker, learning_rate, value)
    first = claimed(h, worker)
    assert first.params == {"learning_rate": 0.01}
    h.queue.start(first.trial_id, TrialStart(3, first.params, "cpu", "/ckpt/3"))
    diverged = TrialOutcome(TrialState.FAILED, None, {"problem_labels": ",diverged,"})
    h.queue.finish(first.trial_id, worker, diverged, OptunaNumber(3))
    # 0.01 is out of the top (it blew up on a new seed); 0.03 moves in, with no confirmation
    # yet, ahead of 0.02
    assert [claimed(h, worker_of(h, pid)).params for pid in (2, 3)] == [
        {"learning_rate": 0.02},
        {"learning_rate": 0.03},
    ]


def test_a_study_without_confirm_never_confirms(harness: Harness) -> None:
    h = harness
    h.add_study(n_trials=2)
    worker = worker_of(h)
    searched(h, worker, 0.02, 0.5)
    last = claimed(h, worker)
    assert (last.confirmation, last.params) == (False, None)


# --- a trial's life --------------------------------------------------------------------------


def test_start_records_the_sampled_parameters_and_the_resume_checkpoint(harness: Harness) -> None:
    h = harness
    h.add_study(n_trials=1)
    claim = started(h, worker_of(h), number=7)
    trial = h.trial(claim.trial_id)
    assert (trial.params, trial.device, trial.optuna_trial_id) == (PARAMS, "cpu", 7)
    assert trial.last_checkpoint_path == f"/ckpt/{claim.study_id}/0/last.ckpt"


def test_finish_records_the_result(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=2)
    worker = worker_of(h)
    claim = started(h, worker)
    h.queue.record_epochs(claim.trial_id, [epoch(1, 0.9)])
    columns = {
        "metrics": {"val_loss": 0.25, "val_accuracy": 0.9},
        "best_metrics": {"val_loss": 0.25},
        "best_epoch": 2,
        "stopped_early": True,
        "diagnosis": "healthy",
        "diagnosis_detail": "it learned",
        "duration_s": 12.5,
        "checkpoint_path": "/ckpt/best.ckpt",
        "last_checkpoint_path": "/ckpt/last.ckpt",
        "problems": [{"label": "slow", "epoch": 1}],
        "problem_labels": ",slow,",
        "plugin_versions": {"hps-plugin": "1.0"},
        "resumed_from_epoch": None,
    }
    recorded = h.queue.finish(
        claim.trial_id, worker, completed(0.25, **columns), OptunaNumber(4), [epoch(2, 0.25)]
    )
    assert recorded is not None
    assert (recorded.optuna_number, recorded.next_claim) == (4, None)
    trial = h.trial(claim.trial_id)
    assert (trial.state, trial.value, trial.optuna_trial_id) == (TrialState.COMPLETE, 0.25, 4)
    assert {name: getattr(trial, name) for name in columns} == columns
    assert trial.epochs_run == 2
    assert trial.finished_at is not None
    assert [(row["epoch"], row["val_loss"]) for row in h.epochs(claim.trial_id)] == [
        (1, 0.9),
        (2, 0.25),
    ]
    assert h.epochs(claim.trial_id)[1]["kernel_grad_norms"] == [0.5, 0.25]
    study = h.study(study_id)
    assert (study.best_trial_id, study.best_value, study.status) == (
        claim.trial_id,
        0.25,
        StudyStatus.RUNNING,
    )
    assert (h.worker(worker).status, h.worker(worker).current_trial_id) == ("idle", None)


@pytest.mark.parametrize(("direction", "best"), [("minimize", 0.25), ("maximize", 0.75)])
def test_the_study_keeps_its_best_completed_trial_and_completes_on_budget(
    harness: Harness, direction: str, best: float
) -> None:
    """A pruned trial never becomes the best; ties keep the first trial that reached it."""
    h = harness
    ends: list[TrialOutcome] = [
        pruned(),
        completed(0.5),
        completed(0.25),
        completed(0.75),
        pruned(),
        completed(0.25),
        completed(0.75),
        completed(None),  # completed with no finite objective
    ]
    study_id = h.add_study(n_trials=len(ends), direction=direction)
    worker = worker_of(h)
    values: dict[int, float | None] = {}
    for outcome in ends:
        claim = started(h, worker)
        assert h.queue.finish(claim.trial_id, worker, outcome, OptunaNumber(claim.number))
        values[claim.trial_id] = outcome.value
        if len(values) == 1:
            assert h.study(study_id).best_trial_id is None
        if len(values) < len(ends):
            assert h.study(study_id).status == StudyStatus.RUNNING
    study = h.study(study_id)
    first_best = next(trial_id for trial_id, value in values.items() if value == best)
    assert (study.best_trial_id, study.best_value) == (first_best, best)
    assert {trial.id: trial.value for trial in h.trials(study_id)} == values
    assert (study.status, study.error) == (StudyStatus.COMPLETED, None)
    assert study.finished_at is not None
    assert h.queue.claim(worker) is None


def test_a_result_claims_the_next_trial_but_not_of_the_study_it_completes(
    harness: Harness,
) -> None:
    h = harness
    study_id = h.add_study(n_trials=2)
    worker = worker_of(h)
    claim = started(h, worker)
    recorded = h.queue.finish(
        claim.trial_id, worker, completed(0.5), OptunaNumber(0), claim_next=True
    )
    assert recorded is not None
    assert recorded.next_claim is not None
    following = recorded.next_claim
    assert (following.study_id, following.number) == (study_id, 1)
    assert (h.worker(worker).status, h.worker(worker).current_trial_id) == (
        "busy",
        following.trial_id,
    )
    later = h.add_study(n_trials=1)  # lower in the queue (newer): only once the first is done
    h.queue.start(following.trial_id, start_of(following))
    last = h.queue.finish(
        following.trial_id, worker, completed(0.4), OptunaNumber(1), claim_next=True
    )
    assert last is not None
    assert h.study(study_id).status == StudyStatus.COMPLETED
    assert last.next_claim is not None
    assert (last.next_claim.study_id, last.next_claim.number) == (later, 0)
    h.queue.start(last.next_claim.trial_id, start_of(last.next_claim))
    end = h.queue.finish(
        last.next_claim.trial_id, worker, completed(0.3), OptunaNumber(0), claim_next=True
    )
    assert end is not None
    assert end.next_claim is None
    assert [len(h.trials(s)) for s in (study_id, later)] == [2, 1]
    assert (h.worker(worker).status, h.worker(worker).current_trial_id) == ("idle", None)


@pytest.mark.parametrize("how", ["reap", "hand_over"])
def test_a_result_after_its_trial_was_handed_over_is_dropped(harness: Harness, how: str) -> None:
    """A worker silent past the grace period finds its trial handed over to a retry: its late
    result, failure or hand-over writes nothing and frees the worker."""
    h = harness
    study_id = h.add_study(n_trials=2)
    other = h.add_study(n_trials=2)  # work a dropped result must not claim
    worker = worker_of(h)
    claim = started(h, worker)
    if how == "reap":
        h.age_heartbeat(claim.trial_id, 120)
        assert [lost.trial_id for lost in h.queue.reap(60, 2)] == [claim.trial_id]
    else:
        assert h.queue.hand_over(claim.trial_id, worker, stop(), 2, OptunaNumber(9)) == 9
    handed_over = h.trial(claim.trial_id)
    assert h.queue.record_epochs(claim.trial_id, [epoch(4)]) is False
    late = h.queue.finish(
        claim.trial_id, worker, completed(0.125), OptunaNumber(0), [epoch(5)], claim_next=True
    )
    assert late is None
    assert h.queue.fail(claim.trial_id, worker, "late", OptunaNumber(0), [epoch(6)]) is None
    assert h.queue.hand_over(claim.trial_id, worker, stop(7), 2, OptunaNumber(0)) is None
    assert h.trial(claim.trial_id) == handed_over
    assert handed_over.state == TrialState.FAILED
    assert handed_over.value is None
    assert [row["epoch"] for row in h.epochs(claim.trial_id)] == []
    study = h.study(study_id)
    assert (study.best_trial_id, study.best_value) == (None, None)
    assert states(h, study_id) == [(0, TrialState.FAILED), (1, TrialState.WAITING)]
    assert h.trials(other) == []
    assert (h.worker(worker).status, h.worker(worker).current_trial_id) == ("idle", None)


def test_a_result_written_again_gives_back_the_claim_it_made(harness: Harness) -> None:
    """The result and its claim committed, the answer was lost: the write again is dropped,
    and the claim its worker never learnt of waits in its slot for the next claim."""
    h = harness
    study_id = h.add_study(n_trials=3)
    worker = worker_of(h)
    claim = started(h, worker)
    first = h.queue.finish(claim.trial_id, worker, completed(0.5), OptunaNumber(0), claim_next=True)
    assert first is not None
    lost = first.next_claim
    assert lost is not None
    again = h.queue.finish(claim.trial_id, worker, completed(0.5), OptunaNumber(0), claim_next=True)
    assert again is None
    given_back = h.trial(lost.trial_id)
    assert (given_back.state, given_back.worker_id) == (TrialState.WAITING, None)
    assert (h.worker(worker).status, h.worker(worker).current_trial_id) == ("idle", None)
    taken = claimed(h, worker)
    assert (taken.trial_id, taken.number, taken.params, taken.retry_of_id) == (
        lost.trial_id,
        1,
        None,
        None,
    )
    assert taken.seed_number == 1
    assert [trial.number for trial in h.trials(study_id)] == [0, 1]


def test_hand_over_queues_a_retry_until_the_chain_used_max_retries(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=1)
    worker = worker_of(h)
    claim = started(h, worker)
    epochs = [epoch(1), epoch(2)]
    assert h.queue.hand_over(claim.trial_id, worker, stop(2), 1, OptunaNumber(5), epochs) == 5
    original = h.trial(claim.trial_id)
    assert (original.state, original.error, original.optuna_trial_id) == (
        TrialState.FAILED,
        "worker stopped (SIGTERM)",
        5,
    )
    assert (original.epochs_run, original.last_checkpoint_path, original.duration_s) == (
        2,
        "/ckpt/last.ckpt",
        3.5,
    )
    assert original.finished_at is not None
    assert [row["epoch"] for row in h.epochs(claim.trial_id)] == [1, 2]
    assert (h.worker(worker).status, h.worker(worker).current_trial_id) == ("idle", None)
    (_, retry) = h.trials(study_id)
    assert (retry.number, retry.state, retry.retry_of_id) == (1, TrialState.WAITING, original.id)
    assert (retry.params, retry.last_checkpoint_path, retry.worker_id) == (
        PARAMS,
        "/ckpt/last.ckpt",
        None,
    )
    assert h.study(study_id).status == StudyStatus.RUNNING
    again = claimed(h, worker)
    assert again.trial_id == retry.id
    h.queue.start(again.trial_id, start_of(again))
    assert h.queue.hand_over(again.trial_id, worker, stop(3), 1, OptunaNumber(6)) == 6
    assert states(h, study_id) == [(0, TrialState.FAILED), (1, TrialState.FAILED)]
    study = h.study(study_id)  # its one slot ended failed, with no trial that succeeded
    assert study.status == StudyStatus.FAILED
    assert study.error == "none of its 1 trials completed: each failed (its error says why)"


def test_fail_marks_the_trial_failed(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=3)
    worker = worker_of(h)
    claim = started(h, worker, number=3)
    assert h.queue.fail(claim.trial_id, worker, "bad data", OptunaNumber(8), [epoch(1)]) == 8
    trial = h.trial(claim.trial_id)
    assert (trial.state, trial.error, trial.optuna_trial_id) == (TrialState.FAILED, "bad data", 8)
    assert trial.finished_at is not None
    assert [row["epoch"] for row in h.epochs(claim.trial_id)] == [1]
    assert (h.worker(worker).status, h.worker(worker).current_trial_id) == ("idle", None)
    other = started(h, worker, number=4)
    assert h.queue.fail(other.trial_id, worker, "crash") is None  # no Optuna trial told
    assert h.trial(other.trial_id).optuna_trial_id == 4  # as its start recorded
    study = h.study(study_id)
    assert (study.status, study.best_trial_id) == (StudyStatus.RUNNING, None)
    assert states(h, study_id) == [(0, TrialState.FAILED), (1, TrialState.FAILED)]


def test_a_study_whose_trials_all_failed_ends_failed(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=2)
    worker = worker_of(h)
    for _ in range(2):
        claim = started(h, worker)
        h.queue.fail(claim.trial_id, worker, "crash", OptunaNumber(claim.number))
    study = h.study(study_id)
    assert study.status == StudyStatus.FAILED
    assert study.error == "none of its 2 trials completed: each failed (its error says why)"
    assert study.finished_at is not None


def test_a_study_with_one_trial_that_succeeded_completes(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=2)
    worker = worker_of(h)
    claim = started(h, worker)
    h.queue.fail(claim.trial_id, worker, "crash", OptunaNumber(0))
    claim = started(h, worker)
    h.queue.finish(claim.trial_id, worker, pruned(), OptunaNumber(1))
    assert (h.study(study_id).status, h.study(study_id).error) == (StudyStatus.COMPLETED, None)


def test_fail_study_fails_it_and_its_running_trials(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=4, max_parallel_trials=3)
    worker = worker_of(h)
    done = started(h, worker)
    h.queue.finish(done.trial_id, worker, completed(0.5), OptunaNumber(0))
    started(h, worker)
    started(h, worker)
    h.queue.fail_study(study_id, "the data set is gone")
    study = h.study(study_id)
    assert (study.status, study.error) == (StudyStatus.FAILED, "the data set is gone")
    assert study.finished_at is not None
    trials = h.trials(study_id)
    assert [(t.state, t.error) for t in trials] == [
        (TrialState.COMPLETE, None),
        (TrialState.FAILED, "study failed: the data set is gone"),
        (TrialState.FAILED, "study failed: the data set is gone"),
    ]
    assert h.queue.claim(worker) is None


# --- giving back, reaping, heartbeats --------------------------------------------------------


def test_release_gives_back_the_claims_never_started(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=3, max_parallel_trials=3)
    worker = worker_of(h)
    training = started(h, worker)
    never_started = h.queue.claim_more(worker, study_id)
    assert never_started is not None
    h.queue.release(worker)
    given_back = h.trial(never_started.trial_id)
    assert (given_back.state, given_back.worker_id) == (TrialState.WAITING, None)
    assert h.trial(training.trial_id).state == TrialState.RUNNING  # a pack's others keep on
    assert h.study(study_id).status == StudyStatus.RUNNING
    taken = claimed(h, worker_of(h, 2))
    assert (taken.trial_id, taken.number, taken.params) == (never_started.trial_id, 1, None)


def test_a_claim_given_back_to_a_cancelled_study_ends_it(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=3)
    worker = worker_of(h)
    claim = claimed(h, worker)
    h.cancel(study_id)
    h.queue.release(worker)
    assert h.trial(claim.trial_id).state == TrialState.WAITING
    study = h.study(study_id)
    assert (study.status, study.error) == (StudyStatus.CANCELLED, None)
    assert study.finished_at is not None


def test_reap_hands_over_silent_trials_and_marks_their_workers_lost(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=4, max_parallel_trials=2)
    silent_worker, live_worker = worker_of(h, 1), worker_of(h, 2)
    silent = started(h, silent_worker, number=11)
    alive = started(h, live_worker)
    h.age_heartbeat(silent.trial_id, 120)
    lost = h.queue.reap(60, 2)
    name = h.study(study_id).optuna_study_name
    assert lost == [LostTrial(silent.trial_id, name, 11)]
    trial = h.trial(silent.trial_id)
    assert (trial.state, trial.error) == (TrialState.FAILED, "worker lost: no heartbeat for 120 s")
    assert (h.worker(silent_worker).status, h.worker(silent_worker).current_trial_id) == (
        "lost",
        None,
    )
    assert (h.worker(live_worker).status, h.worker(live_worker).current_trial_id) == (
        "busy",
        alive.trial_id,
    )
    assert states(h, study_id) == [
        (0, TrialState.FAILED),
        (1, TrialState.RUNNING),
        (2, TrialState.WAITING),
    ]
    retry = h.trials(study_id)[2]
    assert (retry.retry_of_id, retry.params) == (silent.trial_id, PARAMS)
    assert retry.last_checkpoint_path == f"/ckpt/{study_id}/0/last.ckpt"
    assert h.queue.reap(60, 2) == []  # nothing silent left


def test_reap_ends_the_study_of_the_last_trial_it_hands_over(harness: Harness) -> None:
    h = harness
    study_id = h.add_study(n_trials=3)
    worker = worker_of(h)
    claim = started(h, worker)
    h.cancel(study_id)
    h.age_heartbeat(claim.trial_id, 120)
    assert len(h.queue.reap(60, 2)) == 1
    assert h.study(study_id).status == StudyStatus.CANCELLED


def test_reap_ends_studies_over_with_no_trial_running(harness: Harness) -> None:
    h = harness
    cancelled = h.add_study(n_trials=3)
    worker = worker_of(h)
    claim = started(h, worker)
    h.queue.hand_over(claim.trial_id, worker, stop(), 2, OptunaNumber(0))  # a retry waits
    h.cancel(cancelled)
    assert h.study(cancelled).status == StudyStatus.RUNNING
    long_ago = utcnow() - timedelta(seconds=61)
    out_of_time = h.add_study(
        n_trials=3, timeout_s=60, status=StudyStatus.RUNNING, started_at=long_ago
    )
    in_time = h.add_study(
        n_trials=3, timeout_s=3600, status=StudyStatus.RUNNING, started_at=long_ago
    )
    assert h.queue.reap(60, 2) == []
    assert (h.study(cancelled).status, h.study(cancelled).error) == (StudyStatus.CANCELLED, None)
    assert (h.study(out_of_time).status, h.study(out_of_time).error) == (
        StudyStatus.COMPLETED,
        "time budget of 60 s ran out after 0 trials",
    )
    assert h.study(in_time).status == StudyStatus.RUNNING


def test_record_epochs_upserts_and_never_lowers_the_epoch_count(harness: Harness) -> None:
    h = harness
    h.add_study(n_trials=1)
    claim = started(h, worker_of(h))
    assert h.queue.record_epochs(claim.trial_id, [epoch(1, 0.9), epoch(2, 0.8)]) is True
    assert h.trial(claim.trial_id).epochs_run == 2
    h.queue.record_epochs(claim.trial_id, [epoch(2, 0.7), epoch(3, 0.6)])  # 2 written again
    h.queue.record_epochs(claim.trial_id, [epoch(1, 0.5)])  # a resumed trial's first epoch
    rows = h.epochs(claim.trial_id)
    assert [(row["epoch"], row["val_loss"]) for row in rows] == [(1, 0.5), (2, 0.7), (3, 0.6)]
    assert set(rows[0]) == set(EPOCH_COLUMNS)
    assert (rows[0]["loss"], rows[0]["accuracy"]) == (2.0, None)
    assert h.trial(claim.trial_id).epochs_run == 3


def test_record_epochs_renews_the_trial_s_heartbeat(harness: Harness) -> None:
    h = harness
    h.add_study(n_trials=1)
    claim = started(h, worker_of(h))
    h.age_heartbeat(claim.trial_id, 120)
    h.queue.record_epochs(claim.trial_id, [epoch(1)])
    assert h.queue.reap(60, 2) == []
    assert h.trial(claim.trial_id).state == TrialState.RUNNING


def test_a_heartbeat_keeps_its_trials_from_being_reaped(harness: Harness) -> None:
    h = harness
    h.add_study(n_trials=2, max_parallel_trials=2)
    worker = worker_of(h)
    beating, forgotten = started(h, worker), started(h, worker)
    for claim in (beating, forgotten):
        h.age_heartbeat(claim.trial_id, 120)
    h.age_worker_heartbeat(worker, 120)
    assert h.queue.live_workers(60) == 0
    h.queue.heartbeat(worker, [beating.trial_id])
    assert h.queue.live_workers(60) == 1
    assert [lost.trial_id for lost in h.queue.reap(60, 2)] == [forgotten.trial_id]
    assert h.trial(beating.trial_id).state == TrialState.RUNNING


def test_live_workers_counts_only_idle_or_busy_workers_heard_from(harness: Harness) -> None:
    h = harness
    h.add_study(n_trials=1)
    idle, busy, stopped, silent, lost = (worker_of(h, pid) for pid in range(5))
    claimed(h, busy)
    h.queue.worker_stopped(stopped)
    assert (h.worker(stopped).status, h.worker(stopped).current_trial_id) == ("stopped", None)
    h.age_worker_heartbeat(silent, 120)
    h.add_study(n_trials=1)
    lost_claim = started(h, lost)
    h.age_heartbeat(lost_claim.trial_id, 120)
    h.queue.reap(60, 2)
    assert h.worker(lost).status == "lost"
    assert (h.worker(idle).status, h.worker(busy).status) == ("idle", "busy")
    assert h.queue.live_workers(60) == 2


def test_a_stopped_worker_holds_no_trial(harness: Harness) -> None:
    h = harness
    h.add_study(n_trials=1)
    worker = worker_of(h)
    claimed(h, worker)
    h.queue.worker_stopped(worker)
    assert (h.worker(worker).status, h.worker(worker).current_trial_id) == ("stopped", None)


# --- the rest of the protocol --------------------------------------------------------------


def test_uploaded_data(harness: Harness) -> None:
    h = harness
    dataset_id = h.add_dataset(location="/uploads/x.csv", target="label", sha256="ab" * 32)
    assert h.queue.uploaded_data(dataset_id) == UploadedData(
        dataset_id, "/uploads/x.csv", "csv", "label", "classification", "ab" * 32
    )
    assert h.queue.uploaded_data(dataset_id + 1000) is None


def test_only_postgres_claims_skip_locked_studies(harness: Harness) -> None:
    assert harness.queue.skips_locked == (harness.kind == "postgres")


def test_an_optuna_write_is_recorded_with_the_result(harness: Harness) -> None:
    """The SQL queue runs it on the result's connection; the fake has none and says so."""
    h = harness
    h.add_study(n_trials=2)
    worker = worker_of(h)
    claim = started(h, worker)
    write = OptunaWrite(lambda connection: 42)
    if h.kind == "memory":
        with pytest.raises(TypeError, match="OptunaNumber"):
            h.queue.finish(claim.trial_id, worker, completed(0.5), write)
        assert h.trial(claim.trial_id).state == TrialState.RUNNING
        return
    recorded = h.queue.finish(claim.trial_id, worker, completed(0.5), write)
    assert recorded is not None
    assert recorded.optuna_number == 42
    assert h.trial(claim.trial_id).optuna_trial_id == 42

"""The queue of trial work: every write of a trial's life, behind one protocol.

A worker claims a trial slot, records the trial's start, its epochs and its end (completed,
pruned, failed or handed over for a retry), gives back what it claimed but will not run, and
reaps the trials of workers that died; a study ends with the write that makes it over. All of it
goes through a `WorkQueue`: `service.queue.sql.SqlWorkQueue` on PostgreSQL and SQLite (the
service), `service.queue.memory.InMemoryWorkQueue` (a fake for tests: no database). One contract
test suite (`tests/test_work_queue_contract.py`) runs over the three.

Every write is its own short transaction and is idempotent, so a caller may retry it while the
database restarts (`service.worker.db_retry`). A write about a trial that no longer runs (the
reaper handed it over while its worker was silent) changes nothing and says so (None): the
retry owns the trial's result.

Lock order (SQL implementations), the one order every transaction that takes more than one row
lock follows, so that no two wait on each other in a cycle:

    trial rows (in id order) → study row → a claimed trial's row → worker row

- a claim locks the study (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so it never waits on one;
  SQLite: the database's one write lock, `BEGIN IMMEDIATE`), inserts or takes the trial, then
  marks the worker busy;
- a trial's end, failure or hand-over locks its trial's row, then its study's (the best trial,
  the study's end), then, when it claims the next trial in the same transaction, that claim's
  rows, and last the worker's;
- the reaper locks lost trials (skipping locked ones, in study and id order), their studies,
  then their lost workers; the heartbeat locks the running trials' rows, then the worker's,
  and never a study's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection

from service.states import TrialState


@dataclass(frozen=True)
class Claim:
    """A trial slot a worker holds: the trial's row exists and runs (not yet started)."""

    study_id: int
    trial_id: int
    number: int
    optuna_study_name: str
    spec: dict[str, Any]
    direction: str
    retry_of_id: int | None = None
    """Set for the retry of a lost trial: run `params` again, from `resume_from` if given."""
    params: dict[str, Any] | None = None
    resume_from: str | None = None
    seed_number: int | None = None
    """The number of the first trial of a retry chain: a retry trains with its seed."""
    confirmation: bool = False
    """A confirmation (`service.queue.confirmation`): run `params` with its own seed, unpruned."""
    ended: int | None = None
    """For a study that runs one trial at a time: how many of its trials had ended (complete,
    pruned or failed) when this one was claimed (see `OptunaMirror.sync`)."""

    @property
    def seed_offset(self) -> int:
        return self.number if self.seed_number is None else self.seed_number


@dataclass(frozen=True)
class TrialStart:
    """What a trial's start records: its sampled parameters and where it will checkpoint."""

    optuna_number: int | None
    """Its Optuna trial's number (None: Optuna's storage gets the trial at its end)."""
    params: dict[str, Any]
    device: str
    resume_location: str
    """Where its resume checkpoint will be, so a retry finds it if the worker dies."""


@dataclass(frozen=True)
class OptunaNumber:
    """The trial's number in Optuna's storage, which already holds its end."""

    number: int


@dataclass(frozen=True)
class OptunaWrite:
    """The write that puts the trial's end into Optuna's tables, run on the connection of the
    transaction that records it in ours (both or neither); it returns the trial's number."""

    write: Callable[[Connection], int]


OptunaRecord = OptunaNumber | OptunaWrite
"""How the trial's end reaches Optuna, recorded with it."""


EpochRow = Mapping[str, Any]
"""One epoch's columns (`hps_trial_epochs`; `epoch` and the metrics, finite or None)."""


@dataclass(frozen=True)
class TrialOutcome:
    """A trial's end as it is recorded: the state and the trial's result columns."""

    state: TrialState
    """complete, pruned or failed (diverged)."""
    value: float | None
    """The objective, for a completed trial that has a finite one (the study's best)."""
    columns: Mapping[str, Any]
    """The result's columns of the trial's row (metrics, epochs_run, diagnosis, ...)."""


@dataclass(frozen=True)
class Interruption:
    """A trial stopped by its worker (SIGTERM) at an epoch's end, to be retried."""

    reason: str
    epochs_run: int
    last_checkpoint: str | None
    duration_s: float | None


@dataclass(frozen=True)
class Recorded:
    """A trial's end as written: its Optuna number, and the next claim made with it."""

    optuna_number: int
    next_claim: Claim | None = None


@dataclass(frozen=True)
class LostTrial:
    """A trial the reaper handed over: its worker fell silent past the grace period."""

    trial_id: int
    optuna_study_name: str
    optuna_number: int | None
    """Its Optuna trial, told FAIL by whoever reaped it (None: Optuna never had it)."""


@dataclass(frozen=True)
class UploadedData:
    """An uploaded data set, as a trial that trains on it needs to know it."""

    id: int
    location: str
    format: str
    target: str | None
    task: str
    sha256: str


class WorkQueue(Protocol):
    """Every write of a trial's life (see the module's docstring)."""

    @property
    def skips_locked(self) -> bool:
        """Whether a claim passes over studies other claims hold this moment (then a claim
        that found nothing may have skipped work: `work_remains` says)."""
        ...

    def register_worker(self, host: str, pid: int, device: str) -> int:
        """A new worker, idle; its id."""
        ...

    def worker_stopped(self, worker_id: int) -> None:
        """The worker exits: it is marked stopped and holds no trial."""
        ...

    def heartbeat(self, worker_id: int, trial_ids: Sequence[int]) -> None:
        """The worker and the trials it trains (those still running) are alive now."""
        ...

    def claim(self, worker_id: int) -> Claim | None:
        """The next trial slot for the worker: a waiting trial (a retry, or a slot given
        back) of the highest-priority, oldest study with a free slot (queued or running, not
        cancelled, within its time budget, fewer than `n_trials` slots taken and fewer than
        `max_parallel_trials` running), else a new trial of it; None when there is none."""
        ...

    def claim_more(self, worker_id: int, study_id: int) -> Claim | None:
        """Another slot of `study_id` for a worker that holds one already (a pack)."""
        ...

    def work_remains(self) -> bool:
        """Whether some study has a free slot, including those other claims hold now."""
        ...

    def live_workers(self, grace_s: float) -> int:
        """Workers registered and heard from within `grace_s`."""
        ...

    def release(self, worker_id: int) -> None:
        """Give back the trials the worker claimed but never started: each waits in its slot
        for the next claim; a study that is over meanwhile (cancel, time budget) ends."""
        ...

    def start(self, trial_id: int, start: TrialStart) -> None:
        """The claimed trial's parameters are sampled and it trains."""
        ...

    def record_epochs(self, trial_id: int, epochs: Sequence[EpochRow]) -> bool:
        """Epochs that ended (written again: overwritten); the trial's epoch count raised to
        the last one's (never lowered) and its heartbeat renewed. False, writing nothing, when
        the trial no longer runs (its late epochs would lengthen a handed-over trial's curve)."""
        ...

    def finish(
        self,
        trial_id: int,
        worker_id: int,
        outcome: TrialOutcome,
        optuna: OptunaRecord,
        epochs: Sequence[EpochRow] = (),
        claim_next: bool = False,
    ) -> Recorded | None:
        """The trial ended with `outcome` (with the epochs not recorded yet); the study's best
        trial and status follow in the same transaction, and with `claim_next`, the worker's
        next claim after them (a study this result completes is not claimed again). None: the
        trial no longer runs and its result is dropped (the worker is freed, and any claim it
        holds is given back)."""
        ...

    def hand_over(
        self,
        trial_id: int,
        worker_id: int,
        interruption: Interruption,
        max_retries: int,
        optuna: OptunaRecord,
        epochs: Sequence[EpochRow] = (),
    ) -> int | None:
        """The worker stops: the trial fails and a waiting retry of it, resuming from its last
        checkpoint, takes its slot (unless its chain has used `max_retries`). Its Optuna number
        (None: dropped, as `finish`)."""
        ...

    def fail(
        self,
        trial_id: int,
        worker_id: int,
        reason: str,
        optuna: OptunaRecord | None = None,
        epochs: Sequence[EpochRow] = (),
    ) -> int | None:
        """The trial failed (a crash, bad data, a study that cannot run): its Optuna number
        if it had one (None also when dropped, as `finish`)."""
        ...

    def fail_study(self, study_id: int, reason: str) -> None:
        """The study cannot run at all: it and its running trials fail."""
        ...

    def reap(self, grace_s: float, max_retries: int) -> list[LostTrial]:
        """Hand over every running trial silent for longer than `grace_s` (its worker is
        lost), and end the studies that are over with no trial running to end them."""
        ...

    def uploaded_data(self, dataset_id: int) -> UploadedData | None:
        """An uploaded data set (None: it was deleted)."""
        ...

"""`InMemoryWorkQueue`: the `WorkQueue` with no database, for tests of the worker and the queue.

It keeps the SQL queue's observable semantics (`service.queue.claim`, `reaper`, `release`,
`study_status` and the recorder's writes) over plain objects: the same claim order and slot
counts, the same study-end decision (`study_outcome`), the same drop of a result whose trial no
longer runs. Nothing is ever locked here, so a claim never skips a study (`skips_locked` is
False) and `work_remains` is whether a claim would find something. One lock around every method
makes it safe to share with a worker's heartbeat thread.

Beyond the protocol it has what tests set up and read: `add_study`, `cancel`, `add_dataset`,
`age_heartbeat`, and copies of its rows (`study`, `trial`, `trials`, `epochs`, `worker`),
with the ORM models' field names.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from service.db.models import TrialEpoch, utcnow
from service.queue.claim import past_time_budget
from service.queue.confirmation import Choice, ConfirmPlan, Draw, confirmation_choice
from service.queue.study_status import StudyProgress, study_outcome
from service.queue.work_queue import (
    Claim,
    EpochRow,
    Interruption,
    LostTrial,
    OptunaNumber,
    OptunaRecord,
    Recorded,
    TrialOutcome,
    TrialStart,
    UploadedData,
)
from service.states import (
    ACTIVE_STUDY_STATUSES,
    ENDED_TRIAL_STATES,
    SUCCEEDED_TRIAL_STATES,
    StudyStatus,
    TrialState,
)

EPOCH_COLUMNS = tuple(
    column.name for column in TrialEpoch.__table__.columns if column.name != "trial_id"
)
"""An epoch row's columns (`hps_trial_epochs`): an upsert writes all of them, None if not given."""


@dataclass
class MemoryStudy:
    """`service.db.models.Study`'s queue-relevant columns."""

    id: int
    name: str
    spec: dict[str, Any]
    n_trials: int
    max_parallel_trials: int
    priority: int
    timeout_s: float | None
    direction: str
    optuna_study_name: str
    status: str
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    best_trial_id: int | None = None
    best_value: float | None = None


@dataclass
class MemoryTrial:
    """`service.db.models.Trial`'s columns (its epochs are kept apart: `epochs`)."""

    id: int
    study_id: int
    number: int
    state: str
    started_at: datetime
    optuna_trial_id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    value: float | None = None
    objective_values: list[float | None] | None = None
    metrics: dict[str, Any] | None = None
    best_metrics: dict[str, Any] | None = None
    epochs_run: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False
    diagnosis: str | None = None
    diagnosis_detail: str | None = None
    device: str | None = None
    worker_id: int | None = None
    duration_s: float | None = None
    checkpoint_path: str | None = None
    last_checkpoint_path: str | None = None
    retry_of_id: int | None = None
    confirmation: bool = False
    resumed_from_epoch: int | None = None
    plugin_versions: dict[str, Any] | None = None
    problems: list[dict[str, Any]] | None = None
    problem_labels: str | None = None
    error: str | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None


@dataclass
class MemoryWorker:
    """`service.db.models.Worker`'s columns."""

    id: int
    host: str
    pid: int
    device: str
    started_at: datetime
    heartbeat_at: datetime
    status: str = "idle"
    current_trial_id: int | None = None


_RESULT_COLUMNS = frozenset(f.name for f in dataclasses.fields(MemoryTrial)) - {
    "id",
    "study_id",
    "number",
    "state",
    "value",
    "optuna_trial_id",
    "retry_of_id",
    "worker_id",
}
"""What `TrialOutcome.columns` may set (the rest are the queue's own bookkeeping)."""


class InMemoryWorkQueue:
    """A `WorkQueue` over plain objects (see the module's docstring). Views are copies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._studies: dict[int, MemoryStudy] = {}
        self._trials: dict[int, MemoryTrial] = {}
        self._epochs: dict[int, dict[int, dict[str, Any]]] = {}  # trial id -> epoch -> row
        self._workers: dict[int, MemoryWorker] = {}
        self._datasets: dict[int, UploadedData] = {}
        self._next_id = 1  # one counter for every kind of row: ids never collide across kinds

    # --- set-up and inspection (tests) ---------------------------------------------------------

    def add_study(
        self,
        spec: dict[str, Any],
        *,
        n_trials: int,
        max_parallel_trials: int = 1,
        priority: int = 0,
        timeout_s: float | None = None,
        direction: str = "minimize",
        optuna_study_name: str | None = None,
        status: str = StudyStatus.QUEUED,
        cancel_requested: bool = False,
        created_at: datetime | None = None,
        started_at: datetime | None = None,
    ) -> int:
        with self._lock:
            study_id = self._new_id()
            self._studies[study_id] = MemoryStudy(
                id=study_id,
                name=str(spec.get("name", f"study-{study_id}")),
                spec=copy.deepcopy(spec),
                n_trials=n_trials,
                max_parallel_trials=max_parallel_trials,
                priority=priority,
                timeout_s=timeout_s,
                direction=direction,
                optuna_study_name=optuna_study_name or f"hps-memory-{study_id}",
                status=status,
                cancel_requested=cancel_requested,
                created_at=created_at or utcnow(),
                started_at=started_at,
            )
            return study_id

    def cancel(self, study_id: int) -> None:
        """What the API's cancel does: the request, which the queue then acts on."""
        with self._lock:
            self._studies[study_id].cancel_requested = True

    def add_dataset(
        self,
        *,
        location: str,
        format: str = "csv",
        target: str | None = None,
        task: str = "classification",
        sha256: str = "0" * 64,
    ) -> int:
        with self._lock:
            dataset_id = self._new_id()
            self._datasets[dataset_id] = UploadedData(
                dataset_id, location, format, target, task, sha256
            )
            return dataset_id

    def age_heartbeat(self, trial_id: int, seconds: float) -> None:
        """The trial was last heard from `seconds` ago (a silent worker, for `reap`)."""
        with self._lock:
            self._trials[trial_id].heartbeat_at = utcnow() - timedelta(seconds=seconds)

    def age_worker_heartbeat(self, worker_id: int, seconds: float) -> None:
        """The worker was last heard from `seconds` ago (for `live_workers`)."""
        with self._lock:
            self._workers[worker_id].heartbeat_at = utcnow() - timedelta(seconds=seconds)

    def study(self, study_id: int) -> MemoryStudy:
        with self._lock:
            return copy.deepcopy(self._studies[study_id])

    def trial(self, trial_id: int) -> MemoryTrial:
        with self._lock:
            return copy.deepcopy(self._trials[trial_id])

    def trials(self, study_id: int) -> list[MemoryTrial]:
        """The study's trials by number."""
        with self._lock:
            return copy.deepcopy(self._of_study(study_id))

    def epochs(self, trial_id: int) -> list[dict[str, Any]]:
        """The trial's epoch rows by epoch (every column of `EPOCH_COLUMNS`)."""
        with self._lock:
            rows = self._epochs.get(trial_id, {})
            return [copy.deepcopy(rows[epoch]) for epoch in sorted(rows)]

    def worker(self, worker_id: int) -> MemoryWorker:
        with self._lock:
            return copy.deepcopy(self._workers[worker_id])

    # --- the protocol ------------------------------------------------------------------------

    @property
    def skips_locked(self) -> bool:
        return False

    def register_worker(self, host: str, pid: int, device: str) -> int:
        with self._lock:
            now = utcnow()
            worker_id = self._new_id()
            self._workers[worker_id] = MemoryWorker(worker_id, host, pid, device, now, now)
            return worker_id

    def worker_stopped(self, worker_id: int) -> None:
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is not None:
                worker.status = "stopped"
                worker.current_trial_id = None

    def heartbeat(self, worker_id: int, trial_ids: Sequence[int]) -> None:
        with self._lock:
            now = utcnow()
            for trial_id in trial_ids:
                trial = self._trials.get(trial_id)
                if trial is not None and trial.state == TrialState.RUNNING:
                    trial.heartbeat_at = now
            worker = self._workers.get(worker_id)
            if worker is not None:
                worker.heartbeat_at = now

    def claim(self, worker_id: int) -> Claim | None:
        with self._lock:
            return self._claim(worker_id, self._candidates())

    def claim_more(self, worker_id: int, study_id: int) -> Claim | None:
        with self._lock:
            return self._claim(worker_id, self._candidates(study_id))

    def work_remains(self) -> bool:
        with self._lock:
            return bool(self._candidates())

    def live_workers(self, grace_s: float) -> int:
        with self._lock:
            cutoff = utcnow() - timedelta(seconds=grace_s)
            return sum(
                worker.status in ("idle", "busy") and worker.heartbeat_at >= cutoff
                for worker in self._workers.values()
            )

    def release(self, worker_id: int) -> None:
        with self._lock:
            self._release(worker_id)

    def start(self, trial_id: int, start: TrialStart) -> None:
        with self._lock:
            trial = self._trials[trial_id]
            trial.optuna_trial_id = start.optuna_number
            trial.params = copy.deepcopy(start.params)
            trial.device = start.device
            trial.last_checkpoint_path = start.resume_location

    def record_epochs(self, trial_id: int, epochs: Sequence[EpochRow]) -> bool:
        with self._lock:
            if not epochs:
                return True
            trial = self._trials[trial_id]
            if trial.state != TrialState.RUNNING:
                return False
            self._upsert_epochs(trial_id, epochs)
            trial.epochs_run = max(trial.epochs_run, int(epochs[-1]["epoch"]))
            trial.heartbeat_at = utcnow()
            return True

    def finish(
        self,
        trial_id: int,
        worker_id: int,
        outcome: TrialOutcome,
        optuna: OptunaRecord,
        epochs: Sequence[EpochRow] = (),
        claim_next: bool = False,
    ) -> Recorded | None:
        number = _optuna_number(optuna)
        unknown = set(outcome.columns) - _RESULT_COLUMNS
        if unknown:
            raise ValueError(f"not a result column of a trial: {', '.join(sorted(unknown))}")
        with self._lock:
            trial = self._trials[trial_id]
            if trial.state != TrialState.RUNNING:
                self._drop(worker_id)
                return None
            trial.state = outcome.state
            trial.value = outcome.value
            trial.optuna_trial_id = number
            for name, value in outcome.columns.items():
                setattr(trial, name, copy.deepcopy(value))
            trial.finished_at = utcnow()  # (the SQL queue's clock, whatever the columns say)
            self._upsert_epochs(trial_id, epochs)
            self._update_study(trial, outcome.value)
            claimed = self._claim(worker_id, self._candidates()) if claim_next else None
            if claimed is None:
                self._set_worker_trial(worker_id, None)
            return Recorded(number, claimed)

    def hand_over(
        self,
        trial_id: int,
        worker_id: int,
        interruption: Interruption,
        max_retries: int,
        optuna: OptunaRecord,
        epochs: Sequence[EpochRow] = (),
    ) -> int | None:
        number = _optuna_number(optuna)
        with self._lock:
            trial = self._trials[trial_id]
            if trial.state != TrialState.RUNNING:
                self._drop(worker_id)
                return None
            self._upsert_epochs(trial_id, epochs)
            trial.optuna_trial_id = number
            trial.epochs_run = interruption.epochs_run
            trial.last_checkpoint_path = interruption.last_checkpoint
            trial.duration_s = interruption.duration_s
            self._hand_over(trial, interruption.reason, max_retries)
            self._ended(trial, worker_id)
            return number

    def fail(
        self,
        trial_id: int,
        worker_id: int,
        reason: str,
        optuna: OptunaRecord | None = None,
        epochs: Sequence[EpochRow] = (),
    ) -> int | None:
        number = None if optuna is None else _optuna_number(optuna)
        with self._lock:
            trial = self._trials[trial_id]
            if trial.state != TrialState.RUNNING:
                self._drop(worker_id)
                return None
            self._upsert_epochs(trial_id, epochs)
            if number is not None:
                trial.optuna_trial_id = number
            trial.state = TrialState.FAILED
            trial.error = reason
            trial.finished_at = utcnow()
            self._ended(trial, worker_id)
            return number

    def fail_study(self, study_id: int, reason: str) -> None:
        with self._lock:
            now = utcnow()
            for trial in self._of_study(study_id):
                if trial.state == TrialState.RUNNING:
                    trial.state = TrialState.FAILED
                    trial.error = f"study failed: {reason}"
                    trial.finished_at = now
            study = self._studies[study_id]
            study.status = StudyStatus.FAILED
            study.error = reason
            study.finished_at = now

    def reap(self, grace_s: float, max_retries: int) -> list[LostTrial]:
        with self._lock:
            now = utcnow()
            cutoff = now - timedelta(seconds=grace_s)
            silent = sorted(
                (
                    trial
                    for trial in self._trials.values()
                    if trial.state == TrialState.RUNNING
                    and trial.heartbeat_at is not None
                    and trial.heartbeat_at < cutoff
                ),
                key=lambda trial: (trial.study_id, trial.id),
            )
            lost: list[LostTrial] = []
            for trial in silent:
                study = self._studies[trial.study_id]
                quiet_s = (utcnow() - (trial.heartbeat_at or trial.started_at)).total_seconds()
                self._hand_over(
                    trial, f"worker lost: no heartbeat for {quiet_s:.0f} s", max_retries
                )
                self._finish_if_done(study)
                worker = None if trial.worker_id is None else self._workers.get(trial.worker_id)
                if worker is not None:
                    worker.status = "lost"
                    worker.current_trial_id = None
                lost.append(LostTrial(trial.id, study.optuna_study_name, trial.optuna_trial_id))
            self._end_stalled_studies()
            return lost

    def uploaded_data(self, dataset_id: int) -> UploadedData | None:
        with self._lock:
            return self._datasets.get(dataset_id)

    # --- under the lock ----------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _of_study(self, study_id: int) -> list[MemoryTrial]:
        trials = (trial for trial in self._trials.values() if trial.study_id == study_id)
        return sorted(trials, key=lambda trial: trial.number)

    def _candidates(self, study_id: int | None = None) -> list[MemoryStudy]:
        """`claim._candidates`: the studies with a free slot, best first."""
        now = utcnow()
        studies = [
            study
            for study in self._studies.values()
            if (study_id is None or study.id == study_id)
            and study.status in ACTIVE_STUDY_STATUSES
            and not study.cancel_requested
            and self._has_free_slot(study)
            and not past_time_budget(study.timeout_s, study.started_at, now)
        ]
        return sorted(studies, key=lambda study: (-study.priority, study.created_at, study.id))

    def _has_free_slot(self, study: MemoryStudy) -> bool:
        trials = self._of_study(study.id)
        running = sum(trial.state == TrialState.RUNNING for trial in trials)
        waiting = any(trial.state == TrialState.WAITING for trial in trials)
        # every trial holds a slot, less the retried ones (their retries hold theirs)
        taken = len(trials) - sum(trial.retry_of_id is not None for trial in trials)
        return (taken < study.n_trials or waiting) and running < study.max_parallel_trials

    def _claim(self, worker_id: int, candidates: Iterable[MemoryStudy]) -> Claim | None:
        """`claim.claim_in`: a slot of the first candidate that has one to give now (nothing
        changes under the lock between finding a candidate and taking its slot, but a
        confirmation slot may have to wait for the search's running trials)."""
        self._worker(worker_id)  # a claim for a worker that does not exist is a test's bug
        for study in candidates:
            claim = self._reserve(worker_id, study)
            if claim is not None:
                return claim
        return None

    def _reserve(self, worker_id: int, study: MemoryStudy) -> Claim | None:
        """`claim._reserve` on a candidate with a free slot."""
        now = utcnow()
        trials = self._of_study(study.id)
        ended = (
            sum(trial.state in ENDED_TRIAL_STATES for trial in trials)
            if study.max_parallel_trials == 1
            else None
        )
        if study.status == StudyStatus.QUEUED:
            study.status = StudyStatus.RUNNING
            study.started_at = now
        waiting = next((trial for trial in trials if trial.state == TrialState.WAITING), None)
        if waiting is not None:  # a retry (or a claim given back) first: it holds a slot already
            waiting.state = TrialState.RUNNING
            waiting.worker_id = worker_id
            waiting.started_at = now
            waiting.heartbeat_at = now
            self._set_worker_trial(worker_id, waiting.id)
            return Claim(
                study_id=study.id,
                trial_id=waiting.id,
                number=waiting.number,
                optuna_study_name=study.optuna_study_name,
                spec=copy.deepcopy(study.spec),
                direction=study.direction,
                retry_of_id=waiting.retry_of_id,
                params=(
                    dict(waiting.params)
                    if waiting.retry_of_id is not None or waiting.confirmation
                    else None
                ),
                resume_from=waiting.last_checkpoint_path,
                seed_number=self._retry_chain(waiting)[-1].number,
                confirmation=waiting.confirmation,
                ended=ended,
            )
        choice = self._confirmation_choice(study, trials)
        if choice == "wait":
            return None
        confirms = None if choice == "search" else choice
        number = max((trial.number for trial in trials), default=-1) + 1
        trial = MemoryTrial(
            id=self._new_id(),
            study_id=study.id,
            number=number,
            state=TrialState.RUNNING,
            worker_id=worker_id,
            started_at=now,
            heartbeat_at=now,
            params=dict(confirms or {}),
            confirmation=confirms is not None,
        )
        self._trials[trial.id] = trial
        self._set_worker_trial(worker_id, trial.id)
        return Claim(
            study_id=study.id,
            trial_id=trial.id,
            number=number,
            optuna_study_name=study.optuna_study_name,
            spec=copy.deepcopy(study.spec),
            direction=study.direction,
            params=confirms,
            confirmation=confirms is not None,
            ended=ended,
        )

    def _confirmation_choice(self, study: MemoryStudy, trials: list[MemoryTrial]) -> Choice:
        """`claim._confirmation_choice`: what the study's next new slot does."""
        plan = ConfirmPlan.of(study.spec)
        taken = len(trials) - sum(trial.retry_of_id is not None for trial in trials)
        if plan is None or not plan.is_confirmation_slot(taken, study.n_trials):
            return "search"
        retried = {trial.retry_of_id for trial in trials}
        draws = (
            Draw(
                t.params,
                t.state,
                t.value,
                t.confirmation,
                t.id in retried,
                ",diverged," in (t.problem_labels or ""),
            )
            for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING) or t.confirmation
        )
        return confirmation_choice(draws, plan.top, study.direction)

    def _worker(self, worker_id: int) -> MemoryWorker:
        worker = self._workers.get(worker_id)
        if worker is None:
            raise KeyError(f"no worker {worker_id} is registered")
        return worker

    def _set_worker_trial(self, worker_id: int, trial_id: int | None) -> None:
        """`claim.set_worker_trial`: busy with `trial_id`, or idle (None)."""
        worker = self._worker(worker_id)
        worker.current_trial_id = trial_id
        worker.status = "idle" if trial_id is None else "busy"

    def _retry_chain(self, trial: MemoryTrial) -> list[MemoryTrial]:
        """`claim.retry_chain`: `trial` back to its first attempt (the last item)."""
        chain = [trial]
        while chain[-1].retry_of_id is not None:
            chain.append(self._trials[chain[-1].retry_of_id])
        return chain

    def _upsert_epochs(self, trial_id: int, epochs: Sequence[EpochRow]) -> None:
        rows = self._epochs.setdefault(trial_id, {})
        for row in epochs:  # (keys that are no column are left out, as the SQL upsert does)
            values = {name: copy.deepcopy(row.get(name)) for name in EPOCH_COLUMNS}
            rows[int(row["epoch"])] = values

    def _hand_over(self, trial: MemoryTrial, reason: str, max_retries: int) -> None:
        """`reaper.hand_over`: fail the trial, queue its retry unless its chain is spent or
        its study is over."""
        trial.state = TrialState.FAILED
        trial.error = reason
        trial.finished_at = utcnow()
        study = self._studies[trial.study_id]
        retries_before = len(self._retry_chain(trial)) - 1
        if retries_before >= max_retries or study.status not in ACTIVE_STUDY_STATUSES:
            return
        retry = MemoryTrial(
            id=self._new_id(),
            study_id=study.id,
            number=max(other.number for other in self._of_study(study.id)) + 1,
            state=TrialState.WAITING,
            params=dict(trial.params),
            retry_of_id=trial.id,
            confirmation=trial.confirmation,
            last_checkpoint_path=trial.last_checkpoint_path,
            started_at=utcnow(),
        )
        self._trials[retry.id] = retry

    def _ended(self, trial: MemoryTrial, worker_id: int) -> None:
        """The recorder's `_ended`: the study's bookkeeping with no objective, worker idle."""
        self._update_study(trial, None)
        self._set_worker_trial(worker_id, None)

    def _update_study(self, trial: MemoryTrial, value: float | None) -> None:
        """The recorder's `_update_study`: the best trial (ties keep the first), then the end."""
        study = self._studies[trial.study_id]
        if value is not None and (
            study.best_value is None
            or (study.direction == "minimize" and study.best_value > value)
            or (study.direction == "maximize" and study.best_value < value)
        ):
            study.best_value = value
            study.best_trial_id = trial.id
        self._finish_if_done(study)

    def _finish_if_done(self, study: MemoryStudy) -> None:
        """`study_status.finish_if_done`, counting as `_trial_counts` does."""
        if study.status not in ACTIVE_STUDY_STATUSES:
            return
        trials = self._of_study(study.id)
        running = sum(trial.state == TrialState.RUNNING for trial in trials)
        retries = sum(trial.retry_of_id is not None for trial in trials)
        finished = sum(trial.state in ENDED_TRIAL_STATES for trial in trials) - retries
        succeeded = sum(trial.state in SUCCEEDED_TRIAL_STATES for trial in trials)
        progress = StudyProgress(
            study.status, study.cancel_requested, study.n_trials, study.timeout_s, study.started_at
        )
        now = utcnow()
        outcome = study_outcome(progress, running, finished, now, succeeded)
        if outcome is None:
            return
        study.status, note = outcome
        study.finished_at = now
        if note is not None:
            study.error = note

    def _release(self, worker_id: int) -> None:
        """`release.release_claims`: claimed, never started (no device) → waiting."""
        study_ids: set[int] = set()
        for trial in self._trials.values():
            if (
                trial.worker_id == worker_id
                and trial.state == TrialState.RUNNING
                and trial.device is None
            ):
                trial.state = TrialState.WAITING
                trial.worker_id = None
                study_ids.add(trial.study_id)
        for study_id in sorted(study_ids):
            self._finish_if_done(self._studies[study_id])

    def _drop(self, worker_id: int) -> None:
        """The recorder's `_drop`: the trial no longer runs; free the worker and its claims."""
        self._release(worker_id)
        self._set_worker_trial(worker_id, None)

    def _end_stalled_studies(self) -> None:
        """`reaper.end_stalled_studies`: running studies cancelled or out of time."""
        now = utcnow()
        for study_id in sorted(self._studies):
            study = self._studies[study_id]
            if study.status == StudyStatus.RUNNING and (
                study.cancel_requested or past_time_budget(study.timeout_s, study.started_at, now)
            ):
                self._finish_if_done(study)


def _optuna_number(optuna: OptunaRecord) -> int:
    if isinstance(optuna, OptunaNumber):
        return optuna.number
    raise TypeError(
        "InMemoryWorkQueue records only OptunaNumber: an OptunaWrite runs on a SQL connection "
        "(use SqlWorkQueue, or tell Optuna first and pass its number)"
    )

"""The worker's orchestration on the in-memory queue, with a fake trainer: claim, ask Optuna,
train, record, tell; crashes, stops, lost workers and packs. No database, no training (the
worker on SQLite and PostgreSQL, with the real trainer: test_worker.py and its neighbours)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState as OptunaState

from service.artifacts import artifact_store
from service.config import Settings
from service.queue.memory import InMemoryWorkQueue
from service.queue.work_queue import TrialStart
from service.states import StudyStatus, TrialState
from service.studies.spec import StudySpec
from service.worker.loop import WorkerOptions, WorkLoop
from service.worker.optuna_studies import OptunaStudies
from service.worker.runner import Training
from trainer import DatasetError, EpochRecord, PackMember, TrialConfig, TrialResult

SPACE: dict[str, Any] = {
    "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
}


def spec(**overrides: Any) -> StudySpec:
    base: dict[str, Any] = {
        "name": "loop-test",
        "dataset": {"name": "synthetic", "n_samples": 240, "n_features": 6, "n_classes": 3},
        "model": {"hidden_units": [16]},
        "search_space": SPACE,
        "fixed": {"optimizer": "adam"},
        "budget": {"n_trials": 4, "max_epochs": 3},
        "sampler": {"name": "random", "seed": 1},
        "pruner": {"name": "none"},
    }
    return StudySpec.model_validate({**base, **overrides})


def queued(queue: InMemoryWorkQueue, study_spec: StudySpec) -> int:
    return queue.add_study(
        study_spec.model_dump(mode="json"),
        n_trials=study_spec.budget.n_trials,
        max_parallel_trials=study_spec.budget.max_parallel_trials,
        direction=study_spec.primary.resolved_direction,
    )


def learning_rate(config: TrialConfig) -> float:
    optimizer = config.optimizer
    assert isinstance(optimizer, dict)  # (stored normalized to the dict form)
    return float(optimizer["config"]["learning_rate"])


def loss_of(config: TrialConfig) -> float:
    """The fake trainer's final val_loss: a function of the trial's parameters."""
    return 10 * learning_rate(config)


def result_of(config: TrialConfig, epochs: int, **changes: Any) -> TrialResult:
    final = loss_of(config)
    history = tuple(
        EpochRecord(epoch, 1.0 / epoch, 0.5, final + (epochs - epoch), 0.5, 0.01)
        for epoch in range(1, epochs + 1)
    )
    result = TrialResult(
        status="completed",
        objective="val_loss",
        objective_value=final,
        train=None,
        val=None,
        test=None,
        best_epoch=epochs,
        best=None,
        history=history,
        epochs_run=epochs,
        stopped_early=False,
        diagnosis=None,
        best_checkpoint=None,
        last_checkpoint=None,
        resumed_from_epoch=None,
        device="cpu",
        seed=config.seed,
        wall_time_s=0.01,
        data_fingerprint="fake",
    )
    return dataclasses.replace(result, **changes)


class FakeTrainer:
    """Trains nothing: reports and records `epochs` epochs, then returns a result. `crash`
    maps a call's index (0: the first trial trained) to the error it raises instead."""

    def __init__(self, epochs: int = 2, crash: dict[int, BaseException] | None = None) -> None:
        self.epochs = epochs
        self.crash = crash or {}
        self.calls: list[tuple[TrialConfig, Path | None]] = []
        self.packs: list[int] = []
        self.during: Callable[[], None] = lambda: None

    def one(
        self,
        config: TrialConfig,
        reporter: Any,
        checkpoint_dir: Path,
        resume_from: Path | None,
        *,
        device: str,
        num_threads: int | None,
        stop_requested: Callable[[], bool],
        on_epoch: Callable[[EpochRecord], None],
    ) -> TrialResult:
        index = len(self.calls)
        self.calls.append((config, resume_from))
        if index in self.crash:
            raise self.crash[index]
        result = result_of(config, self.epochs)
        for record in result.history:
            reporter.report(record.epoch, record.val_loss)
            on_epoch(record)
            self.during()
            if stop_requested():  # a SIGTERM: checkpoint at the epoch's end and stop
                checkpoint_dir.mkdir(parents=True, exist_ok=True)
                last = checkpoint_dir / "last.ckpt"
                last.write_text(f"epoch {record.epoch}")
                return dataclasses.replace(
                    result,
                    status="interrupted",
                    history=result.history[: record.epoch],
                    epochs_run=record.epoch,
                    last_checkpoint=str(last),
                )
        return result

    def pack(
        self,
        members: Sequence[PackMember],
        *,
        device: str,
        num_threads: int | None,
        stop_requested: Callable[[], bool],
    ) -> list[TrialResult]:
        self.packs.append(len(members))
        results = []
        for member in members:
            result = result_of(member.config, self.epochs)
            for record in result.history:
                if member.on_epoch is not None:
                    member.on_epoch(record)
            results.append(result)
        return results

    @property
    def training(self) -> Training:
        return Training(self.one, self.pack)


def make_loop(
    queue: InMemoryWorkQueue,
    storage: optuna.storages.BaseStorage,
    trainer: FakeTrainer,
    tmp_path: Path,
    **options: Any,
) -> WorkLoop:
    settings = Settings(data_dir=tmp_path, heartbeat_interval_s=3600, epoch_flush_s=0)
    worker_options = WorkerOptions(device="cpu", exit_when_idle=True, pack_size=1)
    return WorkLoop(
        queue,
        OptunaStudies(storage),
        artifact_store(settings),
        settings,
        dataclasses.replace(worker_options, **options),
        trainer.training,
    )


def optuna_trials(
    storage: optuna.storages.BaseStorage, queue: InMemoryWorkQueue, study_id: int
) -> list[optuna.trial.FrozenTrial]:
    name = queue.study(study_id).optuna_study_name
    return optuna.load_study(study_name=name, storage=storage).trials


def test_a_study_runs_to_completion_each_result_claiming_the_next_trial(tmp_path: Path) -> None:
    queue, storage, trainer = InMemoryWorkQueue(), optuna.storages.InMemoryStorage(), FakeTrainer()
    study_id = queued(queue, spec())
    claims: list[int] = []
    real_claim = queue.claim

    def counted(worker_id: int) -> Any:
        claims.append(worker_id)
        return real_claim(worker_id)

    queue.claim = counted  # type: ignore[method-assign]
    loop = make_loop(queue, storage, trainer, tmp_path)
    assert loop.run() == 0

    trials = queue.trials(study_id)
    study = queue.study(study_id)
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(4)]
    assert study.status == StudyStatus.COMPLETED
    # the first claim, then each result claimed the next; the last claim found the study done
    assert len(claims) == 2
    best = min(trials, key=lambda t: t.value if t.value is not None else float("inf"))
    assert (study.best_trial_id, study.best_value) == (best.id, best.value)
    for trial, (config, _) in zip(trials, trainer.calls, strict=True):
        assert trial.value == pytest.approx(loss_of(config))
        assert trial.params["learning_rate"] == pytest.approx(learning_rate(config))
        assert [e["epoch"] for e in queue.epochs(trial.id)] == [1, 2]
        assert trial.epochs_run == 2
    # Optuna's study holds the same trials, numbered as ours, with the same values and params
    told = optuna_trials(storage, queue, study_id)
    assert [(t.number, t.state) for t in told] == [(n, OptunaState.COMPLETE) for n in range(4)]
    for trial, frozen in zip(trials, told, strict=True):
        assert trial.optuna_trial_id == frozen.number
        assert frozen.value == pytest.approx(trial.value)
        assert frozen.params == pytest.approx(trial.params)
    worker = queue.worker(loop.worker_id)
    assert (worker.status, worker.current_trial_id) == ("stopped", None)


def test_a_crashing_trial_fails_alone_and_bad_data_says_so(tmp_path: Path) -> None:
    queue, storage = InMemoryWorkQueue(), optuna.storages.InMemoryStorage()
    trainer = FakeTrainer(crash={1: RuntimeError("CUDA out of memory"), 2: DatasetError("NaN")})
    study_id = queued(queue, spec())
    assert make_loop(queue, storage, trainer, tmp_path).run() == 0
    trials = queue.trials(study_id)
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.FAILED,
        TrialState.FAILED,
        TrialState.COMPLETE,
    ]
    assert trials[1].error == "RuntimeError: CUDA out of memory"
    assert trials[2].error == "bad dataset: NaN"
    assert queue.study(study_id).status == StudyStatus.COMPLETED
    told = optuna_trials(storage, queue, study_id)
    assert [t.state for t in told] == [
        OptunaState.COMPLETE,
        OptunaState.FAIL,
        OptunaState.FAIL,
        OptunaState.COMPLETE,
    ]


def test_a_study_that_cannot_run_fails_with_its_reason(tmp_path: Path) -> None:
    queue, storage, trainer = InMemoryWorkQueue(), optuna.storages.InMemoryStorage(), FakeTrainer()
    study_id = queued(queue, spec(dataset={"id": 999}))  # an upload deleted meanwhile
    assert make_loop(queue, storage, trainer, tmp_path).run() == 0
    study = queue.study(study_id)
    assert study.status == StudyStatus.FAILED
    assert study.error == "uploaded dataset 999 no longer exists"
    [trial] = queue.trials(study_id)
    assert trial.state == TrialState.FAILED
    assert trainer.calls == []


def test_a_stopped_worker_hands_its_trial_over_and_the_next_resumes_it(tmp_path: Path) -> None:
    queue, storage = InMemoryWorkQueue(), optuna.storages.InMemoryStorage()
    study_id = queued(queue, spec(budget={"n_trials": 2, "max_epochs": 3}))
    stopping = FakeTrainer(epochs=3)
    first = make_loop(queue, storage, stopping, tmp_path / "first", exit_when_idle=False)
    stopping.during = first.request_stop  # SIGTERM during the first epoch
    assert first.run() == 0

    original, retry = queue.trials(study_id)
    assert original.state == TrialState.FAILED
    assert original.error == "worker stopped (SIGTERM); retry queued"
    assert original.epochs_run == 1
    assert (retry.state, retry.retry_of_id, retry.params) == (
        TrialState.WAITING,
        original.id,
        original.params,
    )
    assert queue.worker(first.worker_id).status == "stopped"

    resuming = FakeTrainer(epochs=3)
    assert make_loop(queue, storage, resuming, tmp_path / "second").run() == 0
    trials = queue.trials(study_id)
    assert [(t.number, t.state) for t in trials] == [
        (0, TrialState.FAILED),
        (1, TrialState.COMPLETE),
        (2, TrialState.COMPLETE),
    ]
    (retried_config, resumed_from), (fresh_config, fresh_resume) = resuming.calls
    assert resumed_from is not None
    assert resumed_from.read_text() == "epoch 1"  # the original's checkpoint, fetched
    assert retried_config.seed == stopping.calls[0][0].seed  # a retry trains with its seed
    assert fresh_resume is None
    assert fresh_config.seed != retried_config.seed
    assert queue.study(study_id).status == StudyStatus.COMPLETED


def test_a_lost_workers_trial_is_reaped_failed_in_optuna_and_retried(tmp_path: Path) -> None:
    queue, storage, trainer = InMemoryWorkQueue(), optuna.storages.InMemoryStorage(), FakeTrainer()
    study_id = queued(queue, spec(budget={"n_trials": 1, "max_epochs": 2}))
    ghost = queue.register_worker("gone", 1, "cpu")
    lost = queue.claim(ghost)
    assert lost is not None
    name = queue.study(study_id).optuna_study_name
    asked = optuna.create_study(study_name=name, storage=storage).ask()
    queue.start(lost.trial_id, TrialStart(asked.number, {"dropout": 0.1}, "cpu", "/gone/last"))
    queue.age_heartbeat(lost.trial_id, 3600)

    loop = make_loop(queue, storage, trainer, tmp_path)
    assert loop.run() == 0
    original, retry = queue.trials(study_id)
    assert original.state == TrialState.FAILED
    assert original.error is not None
    assert original.error.startswith("worker lost")
    assert queue.worker(ghost).status == "lost"
    assert (retry.retry_of_id, retry.state) == (original.id, TrialState.COMPLETE)
    assert queue.study(study_id).status == StudyStatus.COMPLETED
    told = optuna_trials(storage, queue, study_id)
    assert told[0].state == OptunaState.FAIL  # the reaping worker told Optuna
    assert told[retry.optuna_trial_id or 0].state == OptunaState.COMPLETE


def test_max_trials_ends_the_loop_without_claiming_more(tmp_path: Path) -> None:
    queue, storage, trainer = InMemoryWorkQueue(), optuna.storages.InMemoryStorage(), FakeTrainer()
    study_id = queued(queue, spec())
    loop = make_loop(queue, storage, trainer, tmp_path, max_trials=2)
    assert loop.run() == 0
    assert [t.state for t in queue.trials(study_id)] == [TrialState.COMPLETE] * 2
    assert queue.study(study_id).status == StudyStatus.RUNNING
    assert queue.worker(loop.worker_id).current_trial_id is None


def test_trials_of_a_parallel_study_train_as_one_pack(tmp_path: Path) -> None:
    queue, storage, trainer = InMemoryWorkQueue(), optuna.storages.InMemoryStorage(), FakeTrainer()
    study_id = queued(
        queue, spec(budget={"n_trials": 4, "max_epochs": 2, "max_parallel_trials": 4})
    )
    assert make_loop(queue, storage, trainer, tmp_path, pack_size=4).run() == 0
    assert trainer.packs == [4]
    assert trainer.calls == []
    trials = queue.trials(study_id)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all([e["epoch"] for e in queue.epochs(t.id)] == [1, 2] for t in trials)
    assert queue.study(study_id).status == StudyStatus.COMPLETED


def test_the_heartbeat_keeps_the_trials_in_training_alive(tmp_path: Path) -> None:
    queue, storage = InMemoryWorkQueue(), optuna.storages.InMemoryStorage()
    study_id = queued(queue, spec(budget={"n_trials": 1, "max_epochs": 2}))
    trainer = FakeTrainer()
    loop = make_loop(queue, storage, trainer, tmp_path)
    beaten = threading.Event()

    def one_beat() -> None:  # what the heartbeat thread does, once, while the trial trains
        [trial] = queue.trials(study_id)
        queue.age_heartbeat(trial.id, 3600)
        queue.heartbeat(loop.worker_id, loop.trials_in_training())
        beaten.set()
        assert queue.reap(60.0, 2) == []  # alive again: not reaped

    trainer.during = one_beat
    assert loop.run() == 0
    assert beaten.is_set()
    assert [t.state for t in queue.trials(study_id)] == [TrialState.COMPLETE]

"""The worker process: claim a trial slot, run it, record it; heartbeat; stop cleanly.

SIGTERM/SIGINT stop the worker from taking work; the trial in flight checkpoints at the end of
its current epoch and stops as "interrupted" (resumable), then the worker exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import optuna
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from service.artifacts import ArtifactStore, artifact_store
from service.config import Settings
from service.db.engine import create_db_engine, make_session_factory, postgres_connect_args
from service.db.schema import require_current_schema
from service.process import freeze_startup_objects
from service.queue.sql import SqlWorkQueue
from service.queue.work_queue import Claim, WorkQueue
from service.studies.plugins import load_plugins
from service.worker.db_retry import (
    RETRYABLE,
    close_idle_connections,
    release_idle_while_away,
    with_db_retry,
)
from service.worker.optuna_mirror import OptunaSchemaError, check_optuna_schema
from service.worker.optuna_studies import OptunaStudies
from service.worker.runner import RunOptions, Training, TrialRunner

logger = logging.getLogger(__name__)


_LOCKED_RETRY_S = 0.02


@dataclass(frozen=True)
class WorkerOptions:
    device: str = "auto"
    num_threads: int | None = None
    poll_interval_s: float = 1.0
    exit_when_idle: bool = False
    max_trials: int | None = None
    pack_size: int = 8
    """Trials of one study trained as one fused model where that pays (1: never)."""


class WorkerProcess:
    def __init__(self, settings: Settings, options: WorkerOptions) -> None:
        self.settings = settings
        load_plugins(settings)  # the server's allow-list, so both resolve a spec alike
        self.options = options
        url = settings.effective_database_url
        require_current_schema(url)  # before registering: hps_workers may not exist
        self.artifacts = artifact_store(settings)
        self.artifacts.check()  # ArtifactStoreError: one clear line, before any trial
        # One engine per process: ours (claims need BEGIN IMMEDIATE on SQLite) and Optuna's.
        prepared = settings.db_prepared_statements
        self.engine: Engine = create_db_engine(
            url, pool_size=2, immediate=True, prepared_statements=prepared
        )
        release_idle_while_away(self.engine)
        self.queue: WorkQueue = SqlWorkQueue(make_session_factory(self.engine))
        self.storage = _optuna_storage(url, prepared, settings.db_retry_s)
        release_idle_while_away(self.storage.engine)
        self.optuna = OptunaStudies(self.storage, settings.db_retry_s)
        self.loop = WorkLoop(self.queue, self.optuna, self.artifacts, settings, options)
        self.stopping = self.loop.stopping

    @property
    def worker_id(self) -> int:
        return self.loop.worker_id

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        self.loop.request_stop()

    def run(self) -> int:
        """Work until stopped (or idle, with exit_when_idle), then release the connections.
        Returns the process exit code."""
        try:
            return self.loop.run()  # (it deregisters on its way out)
        finally:
            self._dispose()

    def close(self) -> None:
        """Deregister and release the process's connections (for a worker driven by hand,
        through `loop`, rather than by `run`)."""
        self.loop.close()
        self._dispose()

    def _dispose(self) -> None:
        self.engine.dispose()
        self.storage.remove_session()
        self.storage.engine.dispose()


class WorkLoop:
    """The worker's orchestration over a `WorkQueue`: claim, run (`TrialRunner`), record;
    reap lost trials now and then; a heartbeat thread; give back and deregister on the way
    out. No SQL here: the in-memory queue runs it in tests."""

    def __init__(
        self,
        queue: WorkQueue,
        optuna_studies: OptunaStudies,
        artifacts: ArtifactStore,
        settings: Settings,
        options: WorkerOptions,
        training: Training | None = None,
    ) -> None:
        self.queue = queue
        self.optuna = optuna_studies
        self.artifacts = artifacts
        self.settings = settings
        self.options = options
        self.training = training
        self.stopping = threading.Event()
        self.worker_id = with_db_retry(
            lambda: queue.register_worker(socket.gethostname(), os.getpid(), options.device),
            "register",
            patience_s=settings.db_retry_s,
        )
        self.current_trial_id: int | None = None
        self.runner: TrialRunner | None = None
        self._away_delay = 0.1  # backoff while the database is unreachable
        self._poll_s = options.poll_interval_s
        self._locked_delay = _LOCKED_RETRY_S / 2  # backoff while claimable studies are locked
        self._last_reap = -float("inf")

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        if not self.stopping.is_set():
            logger.info("worker %s: stopping after the current epoch", self.worker_id)
        self.stopping.set()

    def run(self) -> int:
        """Work until stopped (or idle, with exit_when_idle). Returns the process exit code."""
        freeze_startup_objects()
        heartbeat = threading.Thread(target=self._heartbeat, daemon=True)
        heartbeat.start()
        runner = self.runner = self.make_runner()
        done = 0
        claim: Claim | None = None  # the next trial, when the last one's result claimed it
        try:
            while not self.stopping.is_set():
                if claim is None:
                    try:
                        claim = self.claim_next()
                    except RETRYABLE as error:  # the database restarts: wait for it, go on
                        self._database_away(error)
                        continue
                    self._away_delay = 0.1
                if claim is None:
                    if self._skipped_work():
                        # Studies with free slots that other workers' claims or results hold
                        # locked for a few milliseconds (SKIP LOCKED passed them): try again
                        # soon, not a poll interval later.
                        self._locked_delay = min(2 * self._locked_delay, self._poll_s)
                        self.stopping.wait(self._locked_delay)
                        continue
                    self._locked_delay = _LOCKED_RETRY_S / 2
                    if self.options.exit_when_idle:
                        logger.info("worker %s: no work left; exiting", self.worker_id)
                        break
                    self.stopping.wait(self._poll_s)
                    continue
                self._locked_delay = _LOCKED_RETRY_S / 2
                done += 1
                last = self.options.max_trials is not None and done >= self.options.max_trials
                current, claim = claim, None
                claim = self.run_claimed(runner, current, chain=not last)
                if last:
                    break
        finally:
            self.stopping.set()
            heartbeat.join(timeout=5)
            if claim is not None:  # claimed with the last result as the stop came
                self._release(claim)
            self.close()
        return 0

    def _release(self, claim: Claim) -> None:
        try:
            with_db_retry(
                lambda: self.queue.release(self.worker_id), "give back a claim", patience_s=10
            )
        except RETRYABLE:  # the reaper hands it over once its heartbeat is past the grace
            logger.warning("worker %s: could not give back trial %s", self.worker_id, claim.number)

    def _skipped_work(self) -> bool:
        """Whether a claim that found nothing passed over work (see `work_remains`). Only
        PostgreSQL's claim skips locked studies (SQLite's waits for the write lock), so on
        SQLite this is asked only before an idle worker exits: each read there would begin
        with the write lock (BEGIN IMMEDIATE)."""
        if not (self.queue.skips_locked or self.options.exit_when_idle):
            return False
        try:
            return self.queue.work_remains()
        except RETRYABLE:  # the database is away: it may well hold work
            return True

    def make_runner(self) -> TrialRunner:
        return TrialRunner(
            self.queue,
            self.optuna,
            self.worker_id,
            RunOptions(
                device=self.options.device,
                num_threads=self.options.num_threads,
                checkpoint_root=self.settings.checkpoint_dir,
                artifacts=self.artifacts,
                dataset_cache=self.settings.data_dir / "cache",
                max_retries=self.settings.max_retries,
                db_retry_s=self.settings.db_retry_s,
                epoch_flush_s=self.settings.epoch_flush_s,
                pack_size=self.options.pack_size,
                worker_grace_s=self.settings.worker_grace_s,
            ),
            self.stopping.is_set,
            self.training,
        )

    def claim_next(self) -> Claim | None:
        """Hand over lost trials (now and then), then claim the next trial slot, if any."""
        self._reap()
        return self.queue.claim(self.worker_id)

    def run_claimed(self, runner: TrialRunner, claim: Claim, chain: bool = True) -> Claim | None:
        """Run a claimed trial; with `chain`, the next one is claimed in the transaction of
        its result (unless the worker is stopping) and returned."""
        try:  # (a worker whose claims come with its results would otherwise never reap)
            self._reap()
        except RETRYABLE as error:  # this trial runs; reaping comes round again
            logger.warning("worker %s: reaping failed (%s)", self.worker_id, error)
        self.current_trial_id = claim.trial_id
        try:
            return runner.run(claim, self._chains if chain else None)
        finally:
            self.current_trial_id = None

    def _chains(self) -> bool:
        """Whether a result claims the worker's next trial with it (not once stopping)."""
        return not self.stopping.is_set()

    def close(self) -> None:
        """Deregister."""
        self._deregister()

    def _database_away(self, error: Exception) -> None:
        delay = self._away_delay = min(2 * self._away_delay, 5.0)
        logger.warning(
            "worker %s: database unreachable (%s); retrying in %.1f s",
            self.worker_id,
            str(error).strip().splitlines()[0],
            delay,
        )
        close_idle_connections()
        self.stopping.wait(delay)

    def _reap(self) -> None:
        """Any worker hands over trials whose worker died (at most every grace period / 4)."""
        now = time.monotonic()
        if now - self._last_reap < self.settings.worker_grace_s / 4:
            return
        self._last_reap = now
        lost = self.queue.reap(self.settings.worker_grace_s, self.settings.max_retries)
        self.optuna.tell_lost(lost)

    def _heartbeat(self) -> None:
        while not self.stopping.wait(self.settings.heartbeat_interval_s):
            try:
                self.queue.heartbeat(self.worker_id, self.trials_in_training())
            except RETRYABLE as error:  # restarting or at its connection limit: beat again
                reason = str(error.orig or error).strip().splitlines()[0]
                logger.warning("worker %s: heartbeat failed (%s)", self.worker_id, reason)
                close_idle_connections()
            except Exception:  # anything else is a bug worth its traceback; the next beat retries
                logger.warning("worker %s: heartbeat failed", self.worker_id, exc_info=True)

    def trials_in_training(self) -> list[int]:
        """The trials this worker trains now: the one it claimed, and a pack's others."""
        ids = set() if self.runner is None else set(self.runner.running)  # (a snapshot)
        if self.current_trial_id is not None:
            ids.add(self.current_trial_id)
        return sorted(ids)

    def _deregister(self) -> None:
        try:
            with_db_retry(
                lambda: self.queue.worker_stopped(self.worker_id), "deregister", patience_s=10
            )
        except RETRYABLE:  # the reaper sees the silent heartbeat and hands its trial over
            logger.warning("worker %s: could not deregister (database away)", self.worker_id)


def _optuna_storage(
    url: str, prepared_statements: bool = True, patience_s: float = 300.0
) -> optuna.storages.RDBStorage:
    """Optuna's storage on our database, retried while the database refuses connections (it
    is restarting, or at its connection limit) for up to `patience_s`. Workers starting
    together also race to create Optuna's tables (its first start on a database is not
    concurrency-safe); the loser retries."""
    engine_kwargs: dict[str, Any] = (
        {}
        if url.startswith("sqlite")
        else {
            "pool_pre_ping": True,
            "pool_size": 2,
            "max_overflow": 2,
            "connect_args": postgres_connect_args(url, prepared_statements),
        }
    )

    def open_storage() -> optuna.storages.RDBStorage:
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, skip_compatibility_check=True
            )  # (checked by check_optuna_schema, one connection at a time)
        except (optuna.exceptions.StorageInternalError, SQLAlchemyError) as error:
            _dispose_abandoned_storage(error)
            cause = error if isinstance(error, SQLAlchemyError) else error.__cause__
            if isinstance(cause, SQLAlchemyError):  # Optuna wraps what SQLAlchemy raised
                raise _as_retryable(cause) from error
            raise
        try:
            check_optuna_schema(storage)
        except OptunaSchemaError:
            storage.engine.dispose()
            raise
        return storage

    return with_db_retry(open_storage, "open Optuna's storage", patience_s=patience_s)


def _dispose_abandoned_storage(error: BaseException) -> None:
    """Close the pool of an RDBStorage whose construction failed. Its engine may hold a
    connection it opened before the failing step, until garbage collection: a server at
    its connection limit would keep that one too, and sixteen workers retrying would hold
    every slot they wait for."""
    traceback = error.__traceback__
    while traceback is not None:
        candidate = traceback.tb_frame.f_locals.get("self")
        if isinstance(candidate, optuna.storages.RDBStorage) and hasattr(candidate, "engine"):
            candidate.engine.dispose()
            return
        traceback = traceback.tb_next


def _as_retryable(error: SQLAlchemyError) -> Exception:
    """A refused connection as it is; any other SQLAlchemy error (the table-creation race)
    as an OperationalError, so that it is retried too."""
    if isinstance(error, RETRYABLE):
        return error
    return OperationalError(str(error), None, error)


def run_worker(settings: Settings, options: WorkerOptions) -> int:
    worker = WorkerProcess(settings, options)
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    return worker.run()

"""One claimed trial: Optuna asks, the trainer trains, the database and Optuna hear the result."""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import optuna
from optuna.trial import TrialState as OptunaState
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from service.artifacts import ArtifactStore, ArtifactStoreError, LocalStore
from service.db.models import Dataset, TrialState
from service.queue.claim import Claim, claim_more, live_workers
from service.studies.spec import StudySpec, UploadedDataset
from service.worker.checkpoints import TrialCheckpoints
from service.worker.db_retry import with_db_retry
from service.worker.optuna_bridge import OptunaReporter, make_pruner, make_sampler
from service.worker.optuna_mirror import OptunaMirror
from service.worker.recorder import OptunaTrial, TrialRecorder, fail_study
from trainer import (
    DatasetConfig,
    DatasetError,
    EpochRecord,
    PackMember,
    TrialConfig,
    TrialResult,
    TrialTemplate,
    is_pack_member_checkpoint,
    pack_key,
    packing_advice,
    packing_summary,
    run_pack,
    run_trial,
)

logger = logging.getLogger(__name__)

_STATES = {
    "completed": (TrialState.COMPLETE, OptunaState.COMPLETE),
    "pruned": (TrialState.PRUNED, OptunaState.PRUNED),
    "diverged": (TrialState.FAILED, OptunaState.FAIL),
}


_STUDY_STATE_SAMPLERS = ("qmc",)
"""Samplers that keep state in the study's own attributes (QMC's position in its sequence),
which the in-memory copy neither reads nor writes back: their studies use Optuna's storage."""


_PER_STUDY_CACHE = 16
_K = TypeVar("_K")
_V = TypeVar("_V")


def _keep(cache: dict[_K, _V], key: _K, value: _V) -> None:
    """Remember `value` for a study; a long-lived worker sees many studies, so a full cache
    starts over."""
    if len(cache) >= _PER_STUDY_CACHE:
        cache.clear()
    cache[key] = value


@dataclasses.dataclass(frozen=True)
class _OptunaTell:
    """Tells Optuna how a trial ended: its number in the shared storage, or (for a mirrored
    study) the write that puts it there in the result's transaction."""

    study: optuna.Study
    trial: optuna.trial.Trial
    mirror: OptunaMirror | None
    patience_s: float

    def __call__(self, value: float | None = None, state: OptunaState | None = None) -> OptunaTrial:
        finished = with_db_retry(
            lambda: self.study.tell(self.trial, value, state=state, skip_if_finished=True),
            "tell Optuna the result",
            patience_s=self.patience_s,
        )
        return self.trial.number if self.mirror is None else self.mirror.writer(finished)

    def recorded(self, number: int | None) -> None:
        if self.mirror is not None:
            self.mirror.recorded(number)


@dataclasses.dataclass(frozen=True)
class _Begun:
    """A claimed trial whose parameters are sampled and whose start is recorded."""

    claim: Claim
    config: TrialConfig
    recorder: TrialRecorder
    reporter: OptunaReporter
    checkpoints: TrialCheckpoints
    resume_from: Path | None
    tell: _OptunaTell

    @property
    def checkpoint_dir(self) -> Path:
        return self.checkpoints.local_dir

    def on_epoch(self, record: EpochRecord) -> None:
        # a remote store gets the resume checkpoint as it changes, before the epoch is
        # recorded: a recorded epoch k means the store holds the state of epoch k - 1 or later
        self.checkpoints.sync()
        self.recorder.epoch(record)


def _why_not_packed(begun: _Begun) -> str | None:
    if begun.resume_from is not None and not is_pack_member_checkpoint(begun.resume_from):
        return "it resumes from a checkpoint of a trial that ran alone"
    return packing_advice(begun.config)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    device: str = "auto"
    num_threads: int | None = None
    checkpoint_root: Path = Path("hpsearch-data/checkpoints")
    """Where the trainer writes a trial's checkpoints (with a remote store: a local copy)."""
    artifacts: ArtifactStore | None = None
    """Where checkpoints and uploads are kept (None: the files under `checkpoint_root`)."""
    dataset_cache: Path = Path("hpsearch-data/cache")
    """Uploaded data sets fetched from a remote store, by content hash."""
    max_retries: int = 2
    db_retry_s: float = 300.0
    epoch_flush_s: float = 1.0
    pack_size: int = 1
    """Trials of one study trained as one fused model where that pays (1: never)."""
    worker_grace_s: float = 60.0
    """A worker silent for longer is not counted among the live ones (a pack's fair share)."""


class TrialRunner:
    def __init__(
        self,
        factory: sessionmaker[Session],
        storage: optuna.storages.RDBStorage,
        worker_id: int,
        options: RunOptions,
        stop_requested: Callable[[], bool],
    ) -> None:
        self.factory = factory
        self.storage = storage
        self.worker_id = worker_id
        self.options = options
        self.stop_requested = stop_requested
        self.artifacts = options.artifacts or LocalStore(options.checkpoint_root.parent)
        # Optuna's Study per study name, kept across trials: loading one costs several round
        # trips (and create_study's duplicate-name probe), and each Study carries its own
        # cache of the finished trials the sampler reads.
        self._studies: dict[str, optuna.Study] = {}
        self._mirrors: dict[str, OptunaMirror] = {}
        # A study's validated spec and trial template, per study: its spec never changes, and
        # validating it (which builds a template too) is a measurable cost per trial.
        self._templates: dict[tuple[int, str], tuple[StudySpec, TrialTemplate]] = {}
        self.running: frozenset[int] = frozenset()
        """The ids of the trials this runner trains now (the worker's heartbeat thread reads
        them: replaced whole, never mutated, so it never sees a set changing size)."""

    def run(
        self, claim: Claim, claim_next: Callable[[Session], Claim | None] | None = None
    ) -> Claim | None:
        """Run the claimed trial and record it. `claim_next` claims the worker's next trial
        in the transaction of this one's result, if it ends with one (it completed, was
        pruned or diverged); what it claimed is returned.

        Where packing pays (`trainer.packing`: a small MLP; the study runs trials in
        parallel), up to `pack_size - 1` more trials of the study are claimed and those of
        the same pack key train with it as one fused model; any other runs alone after."""
        first = self._begin(claim)
        if first is None:
            return None
        members, others = self._pack_around(first)
        outcomes = self._train([first, *members])
        for other in others:
            outcomes += self._train([other])
        begun = [first, *members, *others]
        next_claim = None
        for index, (trial, outcome) in enumerate(zip(begun, outcomes, strict=True)):
            last = index == len(begun) - 1
            next_claim = self._end(trial, outcome, claim_next if last else None)
        return next_claim

    def _begin(self, claim: Claim) -> _Begun | None:
        """Ask Optuna for the claimed trial's parameters and record its start (None: its
        study cannot run, and is failed)."""
        patience_s = self.options.db_retry_s
        recorder = TrialRecorder(
            self.factory, claim.trial_id, self.worker_id, patience_s, self.options.epoch_flush_s
        )
        try:
            spec, template = self._prepared(claim)
            sampler, pruner = make_sampler(spec, claim.number), make_pruner(spec)
        except (ValidationError, ValueError) as error:
            recorder.failed(f"the study cannot run: {error}")
            fail_study(self.factory, claim.study_id, str(error), patience_s)
            return None
        except ArtifactStoreError as error:  # its data set could not be fetched
            recorder.failed(f"the artifact store: {error}")
            return None

        mirror = self._mirror(claim, spec)
        study = self._study(claim, spec) if mirror is None else mirror.study
        fixed = claim.params  # a retry runs its original's parameters again
        if fixed is None and claim.number == 0:
            if spec.warm_start is not None:
                fixed = _best_params(study)  # a warm start's first trial: the sources' best
            elif spec.sampler.starts_from_defaults:
                fixed = template.default_params() or None
        if fixed is not None:
            sampler = _partially_fixed(fixed, sampler)
        study.sampler, study.pruner = sampler, pruner
        # A lost answer to a committed ask would leave one orphan Optuna trial behind; that
        # rare case is better than a worker that dies with its claimed slot. (In memory, for a
        # mirrored study, nothing here touches the database.)
        trial = with_db_retry(study.ask, "ask Optuna for a trial", patience_s=patience_s)
        params = with_db_retry(
            lambda: template.search_space.sample(trial), "sample", patience_s=patience_s
        )
        config = dataclasses.replace(
            template.config_for(params), seed=spec.seed + claim.seed_offset
        )
        checkpoints = TrialCheckpoints(
            self.artifacts, self.options.checkpoint_root, claim.study_id, claim.number
        )
        recorder.started(
            None if mirror is not None else trial.number,
            params,
            self.options.device,
            checkpoints.resume_location,
        )
        self.running = self.running | {claim.trial_id}
        return _Begun(
            claim,
            config,
            recorder,
            OptunaReporter(trial, prunes=spec.pruner.name != "none", patience_s=patience_s),
            checkpoints,
            checkpoints.prepare_resume(claim.resume_from),
            _OptunaTell(study, trial, mirror, patience_s),
        )

    def _pack_around(self, first: _Begun) -> tuple[list[_Begun], list[_Begun]]:
        """The trials that train in one pack with `first` (claimed now), and those claimed
        with them that cannot (they run alone after the pack)."""
        parallel = int(first.claim.spec["budget"]["max_parallel_trials"])
        size = min(self.options.pack_size, parallel)
        if size < 2 or self.stop_requested():
            return [], []
        # a fair share of the study's parallel slots: other live workers get theirs
        workers = with_db_retry(
            lambda: live_workers(self.factory, self.options.worker_grace_s),
            "count the live workers",
            patience_s=self.options.db_retry_s,
        )
        size = min(size, math.ceil(parallel / max(workers, 1)))
        if size < 2:
            return [], []
        why_not = _why_not_packed(first)
        if why_not is not None:
            logger.info(
                "trial %s of study %s runs alone: %s",
                first.claim.number,
                first.claim.study_id,
                why_not,
            )
            return [], []
        key = pack_key(first.config)
        members: list[_Begun] = []
        others: list[_Begun] = []
        while len(members) + 1 < size and not self.stop_requested():
            claim = with_db_retry(
                lambda: claim_more(self.factory, self.worker_id, first.claim.study_id),
                "claim a trial for the pack",
                patience_s=self.options.db_retry_s,
            )
            if claim is None:
                break
            begun = self._begin(claim)
            if begun is None:
                break
            if _why_not_packed(begun) is None and pack_key(begun.config) == key:
                members.append(begun)
            else:
                others.append(begun)
                break  # the study samples other shapes: a larger pack is unlikely
        if members:
            logger.info(
                "packing trials %s of study %s (%s)",
                ", ".join(str(b.claim.number) for b in [first, *members]),
                first.claim.study_id,
                packing_summary(first.config),
            )
        return members, others

    def _train(self, trials: list[_Begun]) -> list[TrialResult | BaseException]:
        """Train one trial alone, or several as a pack; each gets its result or the error
        that ended it."""
        options = self.options
        try:
            if len(trials) == 1:
                (only,) = trials
                return [
                    run_trial(
                        only.config,
                        only.reporter,
                        only.checkpoint_dir,
                        only.resume_from,
                        device=options.device,
                        num_threads=options.num_threads,
                        stop_requested=self.stop_requested,
                        on_epoch=only.on_epoch,
                    )
                ]
            members = [
                PackMember(t.config, t.reporter, t.checkpoint_dir, t.resume_from, t.on_epoch)
                for t in trials
            ]
            return list(
                run_pack(
                    members,
                    device=options.device,
                    num_threads=options.num_threads,
                    stop_requested=self.stop_requested,
                )
            )
        except Exception as error:  # a trial's crash (OOM, a bug) must not take the worker down
            numbers = ", ".join(str(t.claim.number) for t in trials)
            logger.exception("trial(s) %s of study %s failed", numbers, trials[0].claim.study_id)
            return [error] * len(trials)

    def _end(
        self,
        begun: _Begun,
        outcome: TrialResult | BaseException,
        claim_next: Callable[[Session], Claim | None] | None,
    ) -> Claim | None:
        """Record how the trial ended, in our tables and Optuna's."""
        self.running = self.running - {begun.claim.trial_id}
        try:
            return self._record(begun, outcome, claim_next)
        finally:
            begun.checkpoints.discard_local()

    def _record(
        self,
        begun: _Begun,
        outcome: TrialResult | BaseException,
        claim_next: Callable[[Session], Claim | None] | None,
    ) -> Claim | None:
        recorder, tell = begun.recorder, begun.tell
        if isinstance(outcome, DatasetError):
            tell.recorded(recorder.failed(f"bad dataset: {outcome}", tell(state=OptunaState.FAIL)))
            return None
        if isinstance(outcome, BaseException):
            reason = f"{type(outcome).__name__}: {outcome}"
            tell.recorded(recorder.failed(reason, tell(state=OptunaState.FAIL)))
            return None
        result = begun.checkpoints.publish(outcome)
        if result.status == "interrupted":
            tell.recorded(
                recorder.handed_over(
                    result,
                    "worker stopped (SIGTERM); retry queued",
                    self.options.max_retries,
                    tell(state=OptunaState.FAIL),
                )
            )
            return None
        state, optuna_state = _STATES[result.status]
        if optuna_state == OptunaState.COMPLETE and result.objective_value is not None:
            optuna_trial = tell(result.objective_value)
        else:
            optuna_trial = tell(state=optuna_state)
        tell.recorded(recorder.finished(result, state, optuna_trial, claim_next))
        return recorder.next_claim

    def _prepared(self, claim: Claim) -> tuple[StudySpec, TrialTemplate]:
        key = (claim.study_id, claim.optuna_study_name)
        prepared = self._templates.get(key)
        if prepared is None:
            spec = StudySpec.model_validate(claim.spec)
            prepared = (spec, spec.template(self._dataset(spec)))
            _keep(self._templates, key, prepared)
        return prepared

    def _mirror(self, claim: Claim, spec: StudySpec) -> OptunaMirror | None:
        """The in-memory Optuna copy of a study that runs one trial at a time (None for one
        that runs several), made current."""
        if claim.ended is None or spec.sampler.name in _STUDY_STATE_SAMPLERS:
            return None
        mirror = self._mirrors.get(claim.optuna_study_name)
        if mirror is None:
            self._study(claim, spec)  # creates the shared study on its first trial
            mirror = OptunaMirror(
                self.storage,
                claim.optuna_study_name,
                spec.objective.resolved_direction,
                self.options.db_retry_s,
            )
            _keep(self._mirrors, claim.optuna_study_name, mirror)
        mirror.sync(claim.ended)
        return mirror

    def _study(self, claim: Claim, spec: StudySpec) -> optuna.Study:
        study = self._studies.get(claim.optuna_study_name)
        if study is not None:
            return study

        def open_study() -> optuna.Study:
            return optuna.create_study(
                study_name=claim.optuna_study_name,
                storage=self.storage,
                direction=spec.objective.resolved_direction,
                load_if_exists=True,
            )

        patience_s = self.options.db_retry_s
        study = with_db_retry(open_study, "load the Optuna study", patience_s=patience_s)
        _keep(self._studies, claim.optuna_study_name, study)
        return study

    def _dataset(self, spec: StudySpec) -> DatasetConfig | None:
        if not isinstance(spec.dataset, UploadedDataset):
            return None
        with self.factory() as session:
            row = session.get(Dataset, spec.dataset.id)
        if row is None:
            raise ValueError(f"uploaded dataset {spec.dataset.id} no longer exists")
        path = row.path
        if self.artifacts.remote:
            local = self.options.dataset_cache / "uploads" / f"{row.sha256}.{row.format}"
            if not local.is_file() and not self.artifacts.fetch(row.path, local):
                raise ValueError(f"uploaded dataset {row.id}'s file is gone from the store")
            path = str(local)
        return spec.dataset.resolved(path, row.format, row.target, row.task)


def _best_params(study: optuna.Study) -> dict[str, object] | None:
    """The parameters of the study's best complete trial (None while it has none)."""
    try:
        return dict(study.best_trial.params)
    except ValueError:
        return None


def _partially_fixed(
    params: dict[str, object], sampler: optuna.samplers.BaseSampler
) -> optuna.samplers.BaseSampler:
    """`sampler` with `params` fixed. (Optuna marks PartialFixedSampler experimental, since
    2.4; its warning would fill a worker's log once per retry.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.PartialFixedSampler(params, sampler)

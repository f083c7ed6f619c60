"""One claimed trial: Optuna asks, the trainer trains, the database and Optuna hear the result."""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import optuna
from optuna.trial import TrialState as OptunaState
from pydantic import ValidationError

from service.artifacts import ArtifactStore, ArtifactStoreError, LocalStore
from service.queue.confirmation import CONFIRMATION_ATTR
from service.queue.work_queue import Claim, WorkQueue
from service.states import TrialState
from service.studies.objectives import MissingObjectiveError, objective_values
from service.studies.spec import StudySpec, UploadedDataset
from service.studies.warm_start import WARM_START_ATTR
from service.worker.checkpoints import TrialCheckpoints
from service.worker.db_retry import with_db_retry
from service.worker.optuna_bridge import OptunaReporter, make_pruner, make_sampler
from service.worker.optuna_studies import OptunaSide, OptunaStudies, keep
from service.worker.recorder import TrialRecorder
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


class _TrainOne(Protocol):
    def __call__(
        self,
        config: TrialConfig,
        reporter: OptunaReporter,
        checkpoint_dir: Path,
        resume_from: Path | None,
        *,
        device: str,
        num_threads: int | None,
        stop_requested: Callable[[], bool],
        on_epoch: Callable[[EpochRecord], None],
    ) -> TrialResult: ...


class _TrainPack(Protocol):
    def __call__(
        self,
        members: Sequence[PackMember],
        *,
        device: str,
        num_threads: int | None,
        stop_requested: Callable[[], bool],
    ) -> Sequence[TrialResult]: ...


@dataclasses.dataclass(frozen=True)
class Training:
    """How the runner trains: one trial (`trainer.run_trial`) or a pack (`trainer.run_pack`);
    tests of the worker's orchestration put fakes here."""

    one: _TrainOne
    pack: _TrainPack


@dataclasses.dataclass(frozen=True)
class _Begun:
    """A claimed trial whose parameters are sampled and whose start is recorded."""

    claim: Claim
    spec: StudySpec
    config: TrialConfig
    recorder: TrialRecorder
    reporter: OptunaReporter
    checkpoints: TrialCheckpoints
    resume_from: Path | None
    side: OptunaSide
    trial: optuna.trial.Trial

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
    """Orchestrates claimed trials: Optuna asks (`OptunaSide`), the trainer trains
    (`Training`), the queue records (`WorkQueue`) and Optuna hears the end."""

    def __init__(
        self,
        queue: WorkQueue,
        optuna_studies: OptunaStudies,
        worker_id: int,
        options: RunOptions,
        stop_requested: Callable[[], bool],
        training: Training | None = None,
    ) -> None:
        self.queue = queue
        self.optuna = optuna_studies
        self.worker_id = worker_id
        self.options = options
        self.stop_requested = stop_requested
        self.training = training or Training(run_trial, run_pack)
        self.artifacts = options.artifacts or LocalStore(options.checkpoint_root.parent)
        # A study's validated spec and trial template, per study: its spec never changes, and
        # validating it (which builds a template too) is a measurable cost per trial.
        self._templates: dict[tuple[int, str], tuple[StudySpec, TrialTemplate]] = {}
        self.running: frozenset[int] = frozenset()
        """The ids of the trials this runner trains now (the worker's heartbeat thread reads
        them: replaced whole, never mutated, so it never sees a set changing size)."""

    def run(self, claim: Claim, claim_next: Callable[[], bool] | None = None) -> Claim | None:
        """Run the claimed trial and record it. While `claim_next()` says so, the worker's
        next trial is claimed in the transaction of this one's result, if it ends with one
        (it completed, was pruned or diverged); what it claimed is returned.

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
            self.queue, claim.trial_id, self.worker_id, patience_s, self.options.epoch_flush_s
        )
        try:
            spec, template = self._prepared(claim)
            sampler, pruner = make_sampler(spec, claim.number), make_pruner(spec)
        except (ValidationError, ValueError) as error:
            reason = str(error)
            recorder.failed(f"the study cannot run: {reason}")
            with_db_retry(
                lambda: self.queue.fail_study(claim.study_id, reason),
                "fail the study",
                patience_s=patience_s,
            )
            return None
        except ArtifactStoreError as error:  # its data set could not be fetched
            recorder.failed(f"the artifact store: {error}")
            return None

        side = self.optuna.for_claim(claim, spec)
        study = side.study
        fixed = claim.params  # a retry runs its original's parameters again; so does a confirmation
        if fixed is None and claim.number == 0:
            if spec.warm_start is not None:
                fixed = _warm_start_first(study)
            elif spec.sampler.starts_from_defaults:
                fixed = template.default_params() or None
        if fixed is not None:
            sampler = _partially_fixed(fixed, sampler)
        study.sampler, study.pruner = sampler, pruner
        # A lost answer to a committed ask would leave one orphan Optuna trial behind; that
        # rare case is better than a worker that dies with its claimed slot. (In memory, for a
        # mirrored study, nothing here touches the database.)
        trial = with_db_retry(study.ask, "ask Optuna for a trial", patience_s=patience_s)
        if claim.confirmation:  # so Optuna's own readers (importances) can leave it out
            with_db_retry(
                lambda: trial.set_user_attr(CONFIRMATION_ATTR, True),
                "mark the confirmation",
                patience_s=patience_s,
            )
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
            side.number_at_start(trial),
            params,
            self.options.device,
            checkpoints.resume_location,
        )
        self.running = self.running | {claim.trial_id}
        return _Begun(
            claim,
            spec,
            config,
            recorder,
            OptunaReporter(
                trial,
                # a confirmation's value is what the study judges a configuration by: it runs
                # to its end, as its configuration's first draw did
                prunes=spec.pruner.name != "none" and not claim.confirmation,
                patience_s=patience_s,
            ),
            checkpoints,
            checkpoints.prepare_resume(claim.resume_from),
            side,
            trial,
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
            lambda: self.queue.live_workers(self.options.worker_grace_s),
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
                lambda: self.queue.claim_more(self.worker_id, first.claim.study_id),
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
                    self.training.one(
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
                self.training.pack(
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
        claim_next: Callable[[], bool] | None,
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
        claim_next: Callable[[], bool] | None,
    ) -> Claim | None:
        recorder, side, trial = begun.recorder, begun.side, begun.trial
        if isinstance(outcome, BaseException):
            reason = (
                f"bad dataset: {outcome}"
                if isinstance(outcome, DatasetError)
                else f"{type(outcome).__name__}: {outcome}"
            )
            side.recorded(recorder.failed(reason, side.tell(trial, state=OptunaState.FAIL)))
            return None
        result = begun.checkpoints.publish(outcome)
        if result.status == "interrupted":
            side.recorded(
                recorder.handed_over(
                    result,
                    "worker stopped (SIGTERM); retry queued",
                    self.options.max_retries,
                    side.tell(trial, state=OptunaState.FAIL),
                )
            )
            return None
        state, optuna_state = _STATES[result.status]
        values: list[float] | None = None
        if optuna_state == OptunaState.COMPLETE and result.objective_value is not None:
            if begun.spec.multi_objective:
                try:
                    values = objective_values(begun.spec, result)
                except MissingObjectiveError as error:
                    side.recorded(
                        recorder.failed(str(error), side.tell(trial, state=OptunaState.FAIL))
                    )
                    return None
            told = side.tell(trial, result.objective_value if values is None else values)
        else:
            told = side.tell(trial, state=optuna_state)
        chain = claim_next is not None and claim_next()
        side.recorded(recorder.finished(result, state, told, chain, values))
        return recorder.next_claim

    def _prepared(self, claim: Claim) -> tuple[StudySpec, TrialTemplate]:
        key = (claim.study_id, claim.optuna_study_name)
        prepared = self._templates.get(key)
        if prepared is None:
            spec = StudySpec.model_validate(claim.spec)
            prepared = (spec, spec.template(self._dataset(spec)))
            keep(self._templates, key, prepared)
        return prepared

    def _dataset(self, spec: StudySpec) -> DatasetConfig | None:
        if not isinstance(spec.dataset, UploadedDataset):
            return None
        dataset_id = spec.dataset.id
        row = with_db_retry(
            lambda: self.queue.uploaded_data(dataset_id),
            "read the uploaded dataset",
            patience_s=self.options.db_retry_s,
        )
        if row is None:
            raise ValueError(f"uploaded dataset {dataset_id} no longer exists")
        path = row.location
        if self.artifacts.remote:
            local = self.options.dataset_cache / "uploads" / f"{row.sha256}.{row.format}"
            if not local.is_file() and not self.artifacts.fetch(row.location, local):
                raise ValueError(f"uploaded dataset {row.id}'s file is gone from the store")
            path = str(local)
        return spec.dataset.resolved(path, row.format, row.target, row.task)


def _warm_start_first(study: optuna.Study) -> dict[str, object] | None:
    """A warm start's first trial: the seed its submit marked (the sources' best confirmed
    configuration), else the sources' best draw."""
    for seed in study.get_trials(deepcopy=False, states=(OptunaState.COMPLETE,)):
        if seed.user_attrs.get(WARM_START_ATTR, {}).get("first"):
            return dict(seed.params)
    return _best_params(study)


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

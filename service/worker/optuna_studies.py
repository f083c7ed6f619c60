"""Optuna's side of a claimed trial: the study it asks, and how its end reaches Optuna.

Two strategies behind one protocol. A study that runs several trials at once asks and tells
Optuna's shared storage (`SharedStudy`): every worker sees every trial as it runs. A study that
runs one trial at a time asks and tells an in-memory copy (`MirroredStudy`, over
`OptunaMirror`), whose finished trial is written to the shared storage in the transaction that
records its result (`OptunaWrite`). `OptunaStudies` picks one per claim and keeps the studies
and copies across trials.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

import optuna
from optuna.trial import TrialState as OptunaState

from service.queue.work_queue import Claim, LostTrial, OptunaNumber, OptunaRecord
from service.studies.spec import StudySpec
from service.worker.db_retry import with_db_retry
from service.worker.optuna_mirror import OptunaMirror

_STUDY_STATE_SAMPLERS = ("qmc",)
"""Samplers that keep state in the study's own attributes (QMC's position in its sequence),
which the in-memory copy neither reads nor writes back: their studies use Optuna's storage."""

_PER_STUDY_CACHE = 16
_K = TypeVar("_K")
_V = TypeVar("_V")


def keep(cache: dict[_K, _V], key: _K, value: _V) -> None:
    """Remember `value` for a study; a long-lived worker sees many studies, so a full cache
    starts over."""
    if len(cache) >= _PER_STUDY_CACHE:
        cache.clear()
    cache[key] = value


class OptunaSide(Protocol):
    """The Optuna study one claimed trial asks, and how its end is told."""

    @property
    def study(self) -> optuna.Study: ...

    def number_at_start(self, trial: optuna.trial.Trial) -> int | None:
        """The trial's number in the shared storage as it starts (None: it gets one at its
        end)."""
        ...

    def tell(
        self,
        trial: optuna.trial.Trial,
        value: float | Sequence[float] | None = None,
        state: OptunaState | None = None,
    ) -> OptunaRecord:
        """Tell the study how the trial ended (`value`: one per objective); what the queue
        records with its end."""
        ...

    def recorded(self, number: int | None) -> None:
        """The trial's end was recorded with this Optuna number (None: it was dropped)."""
        ...


@dataclasses.dataclass(frozen=True)
class SharedStudy:
    """Asks and tells Optuna's shared storage (each call retried while the database
    restarts)."""

    study: optuna.Study
    patience_s: float

    def number_at_start(self, trial: optuna.trial.Trial) -> int | None:
        return trial.number

    def tell(
        self,
        trial: optuna.trial.Trial,
        value: float | Sequence[float] | None = None,
        state: OptunaState | None = None,
    ) -> OptunaRecord:
        with_db_retry(
            lambda: self.study.tell(trial, value, state=state, skip_if_finished=True),
            "tell Optuna the result",
            patience_s=self.patience_s,
        )
        return OptunaNumber(trial.number)

    def recorded(self, number: int | None) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class MirroredStudy:
    """Asks and tells the worker's in-memory copy; the result's transaction writes the
    finished trial to the shared storage."""

    mirror: OptunaMirror
    study: optuna.Study

    def number_at_start(self, trial: optuna.trial.Trial) -> int | None:
        return None

    def tell(
        self,
        trial: optuna.trial.Trial,
        value: float | Sequence[float] | None = None,
        state: OptunaState | None = None,
    ) -> OptunaRecord:
        finished = self.study.tell(trial, value, state=state, skip_if_finished=True)
        return self.mirror.writer(finished)

    def recorded(self, number: int | None) -> None:
        self.mirror.recorded(number)


class OptunaStudies:
    """The Optuna studies of one worker's trials, on the shared `storage`, kept across trials:
    loading one costs several round trips (and create_study's duplicate-name probe), and each
    Study carries its own cache of the finished trials the sampler reads."""

    def __init__(self, storage: optuna.storages.BaseStorage, patience_s: float = 300.0) -> None:
        self.storage = storage
        self.patience_s = patience_s
        self._studies: dict[str, optuna.Study] = {}
        self._mirrors: dict[str, OptunaMirror] = {}

    def for_claim(self, claim: Claim, spec: StudySpec) -> OptunaSide:
        """The strategy for the claimed trial: its study's in-memory copy, made current, for
        a study that runs one trial at a time on a relational storage; else the shared
        study."""
        mirrored = (
            claim.ended is not None
            and spec.sampler.name not in _STUDY_STATE_SAMPLERS
            and isinstance(self.storage, optuna.storages.RDBStorage)
        )
        if not mirrored or claim.ended is None:
            return SharedStudy(self._study(claim, spec), self.patience_s)
        assert isinstance(self.storage, optuna.storages.RDBStorage)
        mirror = self._mirrors.get(claim.optuna_study_name)
        if mirror is None:
            self._study(claim, spec)  # creates the shared study on its first trial
            mirror = OptunaMirror(
                self.storage,
                claim.optuna_study_name,
                spec.directions,
                self.patience_s,
            )
            keep(self._mirrors, claim.optuna_study_name, mirror)
        mirror.sync(claim.ended)
        return MirroredStudy(mirror, mirror.study)

    def tell_lost(self, lost: Iterable[LostTrial]) -> None:
        """Tell Optuna the trials the reaper handed over failed (their workers cannot)."""
        for trial in lost:
            if trial.optuna_number is None:
                continue
            try:
                study = optuna.load_study(study_name=trial.optuna_study_name, storage=self.storage)
                study.tell(trial.optuna_number, state=OptunaState.FAIL, skip_if_finished=True)
            except KeyError:  # the Optuna study or trial was never created
                continue

    def _study(self, claim: Claim, spec: StudySpec) -> optuna.Study:
        study = self._studies.get(claim.optuna_study_name)
        if study is not None:
            return study

        def open_study() -> optuna.Study:
            return optuna.create_study(
                study_name=claim.optuna_study_name,
                storage=self.storage,
                directions=spec.directions,
                load_if_exists=True,
            )

        study = with_db_retry(open_study, "load the Optuna study", patience_s=self.patience_s)
        keep(self._studies, claim.optuna_study_name, study)
        return study

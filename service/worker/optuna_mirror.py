"""Optuna in the worker's memory for a study that runs one trial at a time.

A study with `max_parallel_trials == 1` never has two trials running, so nothing another worker
could read from Optuna's shared storage while a trial runs. Its worker therefore asks, samples,
prunes and tells against an in-memory copy of the study (Optuna's own `InMemoryStorage`,
holding the finished trials of the shared one) and writes each finished trial to the shared RDB
study once (params, distributions, values, intermediate values, attributes), in the same
transaction as hpsearch's record of the trial's result (`write_finished_trial`). On PostgreSQL
that replaces about 20 round trips per trial (ask, one write per suggested parameter, the
sampler's reads of the history, one or two per reported epoch, tell) with a few statements in
a transaction the result needed anyway.

What an Optuna client of the shared storage sees changes in one way: such a study's trial
appears there when it has finished, not while it runs (hpsearch's own tables and dashboard still
show it live). The copy is rebuilt from the shared storage whenever a trial of the study ended
that this worker did not end itself (another worker ran it, or it was lost and reaped).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import optuna
from optuna.distributions import distribution_to_json
from optuna.storages._rdb import models as optuna_models
from optuna.trial import FrozenTrial
from sqlalchemy import Connection, Insert, Table, bindparam, func, insert, select

from service.queue.work_queue import OptunaWrite
from service.worker.db_retry import with_db_retry

OPTUNA_SCHEMA = "v3.2.0.a"
"""The revision of Optuna's RDB schema the mirror's direct writes were written for (it inserts
through `optuna.storages._rdb.models`, a private module): another revision means reading the
mirror again before trusting it."""


class OptunaSchemaError(RuntimeError):
    """The installed Optuna stores trials in a schema the mirror was not written for."""


def check_optuna_schema(storage: optuna.storages.RDBStorage) -> None:
    """Refuse an Optuna whose RDB schema differs from `OPTUNA_SCHEMA`, or a database whose
    Optuna tables are at another revision than the installed Optuna's (loudly, at start).

    The second is Optuna's own compatibility check, done here instead (the storage is opened
    with `skip_compatibility_check`): Optuna's holds a session's transaction open while it
    reads the revision on a second connection, so workers starting together behind a
    transaction-pooling PgBouncer could each hold one of the pool's server connections and
    wait for another, until the pool's wait timeout."""
    head = storage.get_head_version()
    if head != OPTUNA_SCHEMA:
        raise OptunaSchemaError(
            f"optuna {optuna.__version__} stores trials in RDB schema {head}; hpsearch's Optuna "
            f"mirror writes schema {OPTUNA_SCHEMA}. Install the optuna version pinned in "
            "pyproject.toml"
        )
    current = storage.get_current_version()
    if current != head:
        raise OptunaSchemaError(
            f"the database's Optuna tables are at schema {current}, optuna "
            f"{optuna.__version__} uses {head}: run `optuna storage upgrade --storage <URL>` "
            "(or install the optuna version that created them)"
        )


class OptunaMirror:
    """The in-memory `study` of one shared Optuna study, and its write-back."""

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        study_name: str,
        directions: Sequence[Literal["minimize", "maximize"]],
        patience_s: float = 300.0,
    ) -> None:
        self._storage = storage
        self._directions = list(directions)
        self._patience_s = patience_s
        self._study_id = with_db_retry(
            lambda: storage.get_study_id_from_name(study_name),
            "find the Optuna study",
            patience_s=patience_s,
        )
        self.study = optuna.create_study(directions=self._directions)
        self.ended_seen: int | None = None
        """How many of the study's trials had ended (in hpsearch's tables) when this copy was
        last current; None before the first `sync` or when the copy may be stale."""
        self._ended_before: int | None = None

    def sync(self, ended: int) -> None:
        """Make the copy current, unless exactly the trials this worker ended have ended
        since it last was (`ended`: the study's ended trials now, as the claim counted them)."""
        if ended == self.ended_seen:
            return
        trials = with_db_retry(
            lambda: self._storage.get_all_trials(self._study_id, deepcopy=False),
            "read the Optuna study",
            patience_s=self._patience_s,
        )
        study = optuna.create_study(directions=self._directions)
        study.add_trials([trial for trial in trials if trial.state.is_finished()])
        self.study = study
        self.ended_seen = ended

    def writer(self, finished: FrozenTrial) -> OptunaWrite:
        """The write of a trial that has finished in the copy to the shared study, to run on
        the connection of the transaction that records its result; it returns the trial's
        number there. Tell `recorded` what came of it."""
        self._ended_before, self.ended_seen = self.ended_seen, None  # until `recorded`
        study_id = self._study_id
        return OptunaWrite(lambda connection: write_finished_trial(connection, study_id, finished))

    def recorded(self, number: int | None) -> None:
        """The write from `writer` committed with this number (None: it was rolled back)."""
        expected = len(self.study.get_trials(deepcopy=False)) - 1  # the trials before this one
        if self._ended_before is not None and number == expected:
            self.ended_seen = self._ended_before + 1
        # else the shared study holds trials the copy lacks, or lacks this one: `ended_seen`
        # stays None, so the copy is re-read before the next trial


def write_finished_trial(connection: Connection, study_id: int, trial: FrozenTrial) -> int:
    """Insert a finished trial into Optuna's RDB tables, in the connection's transaction; its
    number.

    Written by hand because Optuna has no bulk path: `RDBStorage.create_new_trial` with a
    template reads before each parameter, attribute and intermediate value it writes (two
    round trips each: 43 ms per trial on PostgreSQL here, as much as the ask and tell it
    replaces). This is one statement per table, with Optuna's own table definitions and value
    encodings; the trial's distributions were checked against the study's by the in-memory
    copy when they were suggested. Trial numbers are assigned as Optuna assigns them: under
    the study row's lock, the count of the study's earlier trials.
    """
    connection.execute(_STUDY_LOCKED, {"study_id": study_id})
    trial_id, number = connection.execute(
        _TRIAL_INSERTED,
        {
            "of_study": study_id,
            "study_id": study_id,
            "state": trial.state,
            "datetime_start": _naive_utc(trial.datetime_start),
            "datetime_complete": _naive_utc(trial.datetime_complete),
        },
    ).one()
    _insert(connection, optuna_models.TrialParamModel, _params(trial_id, trial))
    _insert(connection, optuna_models.TrialValueModel, _values(trial_id, trial))
    _insert(
        connection,
        optuna_models.TrialIntermediateValueModel,
        _intermediate_values(trial_id, trial),
    )
    for model, attrs in (
        (optuna_models.TrialUserAttributeModel, trial.user_attrs),
        (optuna_models.TrialSystemAttributeModel, trial.system_attrs),
    ):
        rows = [
            {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
            for key, value in attrs.items()
        ]
        _insert(connection, model, rows)
    return int(number)


_TRIALS = optuna_models.TrialModel.__table__
_STUDIES = optuna_models.StudyModel.__table__
_STUDY_LOCKED = (
    select(_STUDIES.c.study_id)
    .where(_STUDIES.c.study_id == bindparam("study_id"))
    .with_for_update()
)
_TRIAL_INSERTED = (
    insert(_TRIALS)
    .values(
        number=select(func.count())
        .select_from(_TRIALS)
        .where(_TRIALS.c.study_id == bindparam("of_study"))
        .scalar_subquery()
    )
    .returning(_TRIALS.c.trial_id, _TRIALS.c.number)
)
"""A trial numbered as Optuna numbers them: the count of its study's earlier trials (under the
study row's lock); its other columns come from the execution's parameters."""


def _insert(connection: Connection, model: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(_insert_into(model.__table__), rows)


@functools.cache
def _insert_into(table: Table) -> Insert:
    """Built once per table, as the worker's other hot statements are (building a statement
    costs Python time at every trial even when its compiled form is cached)."""
    return insert(table)


def _params(trial_id: int, trial: FrozenTrial) -> list[dict[str, Any]]:
    return [
        {
            "trial_id": trial_id,
            "param_name": name,
            "param_value": trial.distributions[name].to_internal_repr(value),
            "distribution_json": distribution_to_json(trial.distributions[name]),
        }
        for name, value in trial.params.items()
    ]


def _values(trial_id: int, trial: FrozenTrial) -> list[dict[str, Any]]:
    encode = optuna_models.TrialValueModel.value_to_stored_repr
    rows = []
    for objective, value in enumerate(trial.values or ()):
        stored, kind = encode(value)
        rows.append(
            {"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind}
        )
    return rows


def _intermediate_values(trial_id: int, trial: FrozenTrial) -> list[dict[str, Any]]:
    encode = optuna_models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
    rows = []
    for step, value in trial.intermediate_values.items():
        stored, kind = encode(value)
        rows.append(
            {
                "trial_id": trial_id,
                "step": step,
                "intermediate_value": stored,
                "intermediate_value_type": kind,
            }
        )
    return rows


def _naive_utc(moment: datetime | None) -> datetime | None:
    """Optuna keeps naive local times in memory and naive UTC in its tables."""
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)

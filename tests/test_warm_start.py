"""Warm start: earlier studies' trials seed a new study's sampler (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db.models import Study, StudyStatus, Trial
from service.studies.warm_start import replayed
from tests.api_fixtures import TestClient, seed_study, seed_trial, valid_spec
from tests.test_worker import add_study, run_worker_until_idle, sessions, spec
from trainer.space import SearchSpace

pytest_plugins = ["tests.api_fixtures"]
__all__ = ["sessions"]

STUDIES = "/api/v1/studies"


def optuna_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).trials
    finally:
        storage.engine.dispose()


def source_study(db: sessionmaker[Session], values: list[float], **spec: Any) -> int:
    study = seed_study(
        db,
        status="completed",
        spec=valid_spec(**spec),
        n_trials=len(values),
        objective_metric="val_data_loss",
    )
    for number, value in enumerate(values):
        rate = 0.001 * (number + 1)
        seed_trial(
            db, study, number, value=value, params={"optimizer": "adam", "learning_rate": rate}
        )
    return study


# --- replaying a trial through a search space ---------------------------------------------

SPACE = SearchSpace.model_validate(
    {
        "optimizer": {"type": "categorical", "choices": ["sgd", "momentum"]},
        "momentum": {
            "type": "float",
            "low": 0.5,
            "high": 0.99,
            "when": {"optimizer": ["momentum"]},
        },
        "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    }
)


def test_a_trial_that_fits_the_space_becomes_a_complete_optuna_trial() -> None:
    trial = replayed(
        SPACE, {"optimizer": "momentum", "momentum": 0.9, "learning_rate": 0.01}, 0.3, 7, 2
    )
    assert trial is not None
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.value == 0.3
    assert trial.params == {"optimizer": "momentum", "momentum": 0.9, "learning_rate": 0.01}
    assert trial.distributions["learning_rate"] == optuna.distributions.FloatDistribution(
        1e-4, 0.1, log=True
    )
    assert trial.user_attrs == {"hpsearch_warm_start": {"study_id": 7, "trial": 2}}


@pytest.mark.parametrize(
    "params",
    [
        {"optimizer": "sgd", "learning_rate": 0.5},  # out of range
        {"optimizer": "adam", "learning_rate": 0.01},  # not a choice
        {"optimizer": "momentum", "learning_rate": 0.01},  # momentum missing
        {"optimizer": "sgd", "momentum": 0.9, "learning_rate": 0.01},  # inactive branch
    ],
)
def test_a_trial_outside_the_space_is_left_out(params: dict[str, Any]) -> None:
    assert replayed(SPACE, params, 0.3, 7, 2) is None


def test_a_non_finite_value_is_left_out() -> None:
    assert replayed(SPACE, {"optimizer": "sgd", "learning_rate": 0.01}, float("inf"), 7, 2) is None


# --- submitting ---------------------------------------------------------------------------


def test_the_sources_trials_seed_the_new_optuna_study_before_it_is_queued(
    client: TestClient, db: sessionmaker[Session], api_settings: Settings
) -> None:
    first = source_study(db, [0.5, 0.2])
    second = source_study(db, [0.4, 0.9, 0.1])
    response = client.post(STUDIES, json=valid_spec(warm_start={"studies": [first, second]}))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["warnings"] == []
    trials = optuna_trials(api_settings.effective_database_url, body["optuna_study_name"])
    assert sorted(t.value for t in trials if t.value is not None) == [0.1, 0.2, 0.4, 0.5, 0.9]
    sources = {t.user_attrs["hpsearch_warm_start"]["study_id"] for t in trials}
    assert sources == {first, second}
    with db() as session:  # our table holds only the new study's own trials (none yet)
        assert session.scalars(select(Trial).where(Trial.study_id == body["id"])).all() == []


def test_source_trials_outside_the_new_ranges_are_left_out_with_a_note(
    client: TestClient, db: sessionmaker[Session], api_settings: Settings
) -> None:
    source = source_study(db, [0.5, 0.2, 0.3])  # learning rates 0.001, 0.002, 0.003
    narrow = {
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        "learning_rate": {"type": "float", "low": 0.0015, "high": 0.1, "log": True},
    }
    response = client.post(
        STUDIES, json=valid_spec(search_space=narrow, warm_start={"studies": [source]})
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["warnings"] == [
        f"warm start: 1 of study {source}'s 3 complete trials fall outside this search space "
        "and do not seed it"
    ]
    assert len(optuna_trials(api_settings.effective_database_url, body["optuna_study_name"])) == 2


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"dataset": {"name": "synthetic"}}, "trained on other data"),
        ({"model": {"type": "mlp", "hidden_units": [7]}}, "trained another model"),
        ({"fixed": {"batch_size": 128}}, "fixed other values"),
        ({"objective": {"metric": "val_accuracy"}}, "optimized minimize val_data_loss"),
        (
            {"search_space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 0.1}}},
            "searches 'optimizer', which this study does not",
        ),
    ],
    ids=["dataset", "model", "fixed", "objective", "space"],
)
def test_an_incompatible_source_is_a_422_naming_what_differs_and_stores_nothing(
    client: TestClient, db: sessionmaker[Session], change: dict[str, Any], reason: str
) -> None:
    source = source_study(db, [0.5])
    response = client.post(STUDIES, json=valid_spec(warm_start={"studies": [source]}, **change))
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", "warm_start", "studies", 0]
    assert reason in detail["msg"]
    with db() as session:
        assert session.scalars(select(Study.id)).all() == [source]


def test_unknown_repeated_and_empty_sources_and_a_grid_study_are_refused(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    source = source_study(db, [0.5])
    empty = seed_study(db, status="completed", spec=valid_spec(), objective_metric="val_data_loss")
    cases = [
        ([999_999], ["warm_start", "studies", 0], "no study has id 999999"),
        ([source, source], ["warm_start", "studies", 1], "listed twice"),
        ([empty], ["warm_start", "studies", 0], "has no complete trial within"),
    ]
    for studies, loc, message in cases:
        response = client.post(STUDIES, json=valid_spec(warm_start={"studies": studies}))
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", *loc]
        assert message in response.json()["detail"][0]["msg"]
    grid = valid_spec(
        search_space={"optimizer": {"type": "categorical", "choices": ["sgd", "adam"]}},
        sampler={"name": "grid"},
        warm_start={"studies": [source]},
    )
    response = client.post(STUDIES, json=grid)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "warm_start"]


# --- running ------------------------------------------------------------------------------


def run_warm_started(
    sessions: sessionmaker[Session],
    url: str,
    tmp_path: Path,
    settings: Settings,
    source: int,
    parallel: int,
) -> tuple[Study, list[Trial]]:
    """Submit and run a 2-trial study warm-started from `source`: the study, its trials."""
    from service.studies import submit_study

    warm_spec = spec(
        budget={"n_trials": 2, "max_epochs": 2, "max_parallel_trials": parallel},
        sampler={"name": "tpe", "seed": 5},
        warm_start={"studies": [source]},
    )
    with sessions() as session:
        submitted = submit_study(session, settings, warm_spec)
    run_worker_until_idle(url, tmp_path)
    with sessions() as session:
        study = session.get_one(Study, submitted.id)
        trials = session.scalars(
            select(Trial).where(Trial.study_id == submitted.id).order_by(Trial.number)
        ).all()
    return study, list(trials)


@pytest.mark.parametrize("parallel", [1, 2], ids=["one-at-a-time", "parallel"])
def test_a_warm_started_study_runs_the_sources_best_first_and_keeps_its_own_count(
    migrated_database_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    api_settings: Settings,
    parallel: int,
) -> None:
    source_spec = spec(budget={"n_trials": 4, "max_epochs": 2})
    source_id = add_study(sessions, source_spec)
    run_worker_until_idle(migrated_database_url, tmp_path)
    with sessions() as session:
        source = session.get_one(Study, source_id)
        best = session.get_one(Trial, source.best_trial_id)
        best_params = dict(best.params)

    study, trials = run_warm_started(
        sessions, migrated_database_url, tmp_path, api_settings, source_id, parallel
    )
    assert study.status == StudyStatus.COMPLETED
    assert [t.number for t in trials] == [0, 1]
    assert trials[0].params == best_params  # the sources' best configuration ran first
    frozen = optuna_trials(migrated_database_url, study.optuna_study_name)
    assert len(frozen) == 4 + 2  # the seeds, then the study's own trials
    own = [t for t in frozen if "hpsearch_warm_start" not in t.user_attrs]
    ids = sorted(t.optuna_trial_id for t in trials if t.optuna_trial_id is not None)
    assert sorted(t.number for t in own) == ids
    assert len(ids) == len(trials)


# --- a confirming source: its confirmed best runs first ---------------------------------------


def confirming_source(
    db: sessionmaker[Session],
    draws: list[tuple[float, float, bool]],
    study_spec: dict[str, Any],
    **params: Any,
) -> int:
    """A finished study whose trials are (learning rate, value, confirmation), each with
    `params` too."""
    study = seed_study(
        db,
        status="completed",
        spec=study_spec,
        n_trials=len(draws),
        objective_metric="val_data_loss",
    )
    for number, (rate, value, confirmation) in enumerate(draws):
        trial = {"optimizer": "adam", "learning_rate": rate, **params}
        seed_trial(db, study, number, value=value, params=trial, confirmation=confirmation)
    return study


# Its best single draw (lr 0.01, 0.05) is luck: two confirmations of it average 0.30. lr 0.02's
# three draws average 0.15, the source's confirmed best.
LUCKY_THEN_CONFIRMED = [
    (0.01, 0.05, False),
    (0.02, 0.16, False),
    (0.03, 0.40, False),
    (0.01, 0.40, True),
    (0.02, 0.15, True),
    (0.01, 0.45, True),
    (0.02, 0.14, True),
]


def test_a_confirming_sources_confirmed_best_is_marked_first_not_its_luckiest_draw(
    client: TestClient, db: sessionmaker[Session], api_settings: Settings
) -> None:
    confirming = valid_spec(confirm={"top": 2, "seeds": 2})
    better = confirming_source(db, LUCKY_THEN_CONFIRMED, confirming)
    worse = confirming_source(  # confirmed mean 0.2: loses to 0.15
        db, [(0.004, 0.2, False), (0.004, 0.2, True), (0.005, 0.3, False)], confirming
    )
    plain = source_study(db, [0.01, 0.02])  # a luckier draw, never confirmed
    response = client.post(STUDIES, json=valid_spec(warm_start={"studies": [plain, worse, better]}))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["warnings"] == [
        f"warm start: the first trial runs study {better}'s confirmed best (mean 0.15 over 3 "
        "draws), not the sources' best single draw"
    ]
    trials = optuna_trials(api_settings.effective_database_url, body["optuna_study_name"])
    first = [t for t in trials if t.user_attrs["hpsearch_warm_start"].get("first")]
    assert len(first) == 1
    # the configuration's best draw (trial 6, 0.14) stands for it
    assert first[0].user_attrs["hpsearch_warm_start"] == {
        "study_id": better,
        "trial": 6,
        "first": True,
    }
    assert first[0].params == {"optimizer": "adam", "learning_rate": 0.02}
    assert len(trials) == 7 + 3 + 2  # every source trial still seeds the sampler


def test_a_non_confirming_source_marks_nothing_even_where_it_drew_a_configuration_twice(
    client: TestClient, db: sessionmaker[Session], api_settings: Settings
) -> None:
    source = confirming_source(db, LUCKY_THEN_CONFIRMED, valid_spec())
    response = client.post(STUDIES, json=valid_spec(warm_start={"studies": [source]}))
    assert response.status_code == 201, response.text
    assert response.json()["warnings"] == []
    trials = optuna_trials(
        api_settings.effective_database_url, response.json()["optuna_study_name"]
    )
    assert not any(t.user_attrs["hpsearch_warm_start"].get("first") for t in trials)


@pytest.mark.parametrize("parallel", [1, 2], ids=["one-at-a-time", "parallel"])
def test_a_study_warm_started_from_a_confirming_one_runs_its_confirmed_best_first(
    migrated_database_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    api_settings: Settings,
    parallel: int,
) -> None:
    source_spec = spec(
        budget={"n_trials": 7, "max_epochs": 2}, confirm={"top": 2, "seeds": 2}
    ).model_dump(mode="json")
    source = confirming_source(sessions, LUCKY_THEN_CONFIRMED, source_spec, dropout=0.1)
    _, trials = run_warm_started(
        sessions, migrated_database_url, tmp_path, api_settings, source, parallel
    )
    # not lr 0.01's lucky draw
    assert trials[0].params == {"optimizer": "adam", "learning_rate": 0.02, "dropout": 0.1}

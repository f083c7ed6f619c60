"""Multi-objective studies: a list of objectives in the spec, Optuna's multi-objective samplers,
each trial's value per objective, and the Pareto front (`GET /studies/{id}/pareto`)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Study, Trial, TrialState
from service.queue.memory import InMemoryWorkQueue
from service.states import StudyStatus
from service.studies.pareto import non_dominated
from service.studies.spec import StudySpec
from tests.api_fixtures import valid_spec
from tests.test_worker import run_worker_until_idle
from tests.test_worker_loop import FakeTrainer, make_loop, queued

pytest_plugins = ["tests.api_fixtures"]

TWO = [{"metric": "val_data_loss"}, {"metric": "n_parameters"}]


def multi_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "accuracy-vs-size",
        "dataset": {"name": "synthetic", "n_samples": 240, "n_features": 6, "n_classes": 3},
        "search_space": {
            "units": {"type": "categorical", "choices": [2, 8, 32]},
            "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        },
        "objective": TWO,
        "sampler": {"name": "nsga2", "seed": 3},
        "budget": {"n_trials": 6, "max_epochs": 2},
    }
    return {**spec, **overrides}


# --- the spec ---------------------------------------------------------------------------------


def test_a_list_of_objectives_makes_a_multi_objective_study() -> None:
    spec = StudySpec.model_validate(multi_spec())
    assert spec.multi_objective
    assert [o.metric for o in spec.objectives] == ["val_data_loss", "n_parameters"]
    assert spec.directions == ["minimize", "minimize"]
    assert spec.primary.metric == "val_data_loss"
    assert spec.pruner.name == "none"  # Optuna cannot prune several objectives
    assert spec.template().objective == "val_data_loss"  # the trainer's is the first
    maximized = StudySpec.model_validate(
        multi_spec(objective=[{"metric": "val_accuracy"}, {"metric": "epoch_time_s"}])
    )
    assert maximized.directions == ["maximize", "minimize"]
    single = StudySpec.model_validate(valid_spec())
    assert not single.multi_objective
    assert single.objectives == [single.primary]


@pytest.mark.parametrize(
    ("overrides", "path", "says"),
    [
        (
            {"objective": [{"metric": "n_parameters"}, {"metric": "val_loss"}]},
            "objective[0].metric",
            "first objective",
        ),
        (
            {"objective": [{"metric": "val_loss"}, {"metric": "val_loss"}]},
            "objective[1].metric",
            "listed twice",
        ),
        ({"objective": []}, "objective", "1 to 4 objectives"),
        ({"pruner": {"name": "median"}}, "pruner.name", "cannot prune"),
        ({"sampler": {"name": "cmaes"}}, "sampler.name", "one objective"),
        ({"warm_start": {"studies": [1]}}, "warm_start", "single-objective"),
    ],
)
def test_a_multi_objective_spec_that_cannot_run_names_what_is_wrong(
    overrides: dict[str, Any], path: str, says: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        StudySpec.model_validate(multi_spec(**overrides))
    assert path in str(raised.value)
    assert says in str(raised.value)


def test_a_single_objective_study_may_not_minimize_the_parameter_count_alone() -> None:
    with pytest.raises(ValidationError, match="first objective"):
        StudySpec.model_validate(valid_spec(objective={"metric": "n_parameters"}))


# --- the front's math -------------------------------------------------------------------------


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def test_the_front_is_every_point_no_other_dominates() -> None:
    points = [(1.0, 5.0), (2.0, 2.0), (5.0, 1.0), (3.0, 3.0), (2.0, 2.0), (6.0, 6.0)]
    assert non_dominated(points, ["minimize", "minimize"]) == [0, 1, 2, 4]
    # maximizing the second objective: (1, 5) and (6, 6), which no point beats on both
    assert non_dominated(points, ["minimize", "maximize"]) == [0, 5]
    generator = random.Random(7)
    for _ in range(50):
        n, k = generator.randint(1, 30), generator.randint(2, 3)
        cloud = [tuple(float(generator.randint(0, 6)) for _ in range(k)) for _ in range(n)]
        front = set(non_dominated(cloud, ["minimize"] * k))
        for index, point in enumerate(cloud):
            beaten = any(dominates(other, point) for other in cloud)
            assert (index in front) == (not beaten)


# --- through the worker -----------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [1, 2], ids=["mirrored", "shared"])
def test_a_multi_objective_study_runs_to_its_pareto_front(
    client: TestClient,
    migrated_database_url: str,
    db: sessionmaker[Session],
    tmp_path: Path,
    parallel: int,
) -> None:
    """One trial at a time (the worker's in-memory Optuna copy, written back with the result)
    and two at once (Optuna's shared storage): each trial's two values reach both stores."""
    budget = {"n_trials": 6, "max_epochs": 2, "max_parallel_trials": parallel}
    submitted = client.post("/api/v1/studies", json=multi_spec(budget=budget))
    assert submitted.status_code == 201, submitted.text
    study_id = submitted.json()["id"]
    run_worker_until_idle(migrated_database_url, tmp_path)

    with db() as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(
            select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
        ).all()
    assert study.status == StudyStatus.COMPLETED
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    for trial in complete:
        assert trial.objective_values is not None
        loss, parameters = trial.objective_values
        assert loss == trial.value
        units = trial.params["units"]
        # the built-in MLP's two hidden layers: 6 → units → units → 3, weights and biases
        assert parameters == (6 * units + units) + (units * units + units) + (units * 3 + 3)

    # Optuna holds the same two values per trial, in a two-direction study
    storage = optuna.storages.RDBStorage(migrated_database_url)
    try:
        shared = optuna.load_study(study_name=study.optuna_study_name, storage=storage)
        assert len(shared.directions) == 2
        told = {t.number: t.values for t in shared.trials}
        for trial in complete:
            assert told[trial.optuna_trial_id or 0] == pytest.approx(trial.objective_values)
        optuna_front = sorted(t.number for t in shared.best_trials)
    finally:
        storage.engine.dispose()

    front = client.get(f"/api/v1/studies/{study_id}/pareto")
    assert front.status_code == 200, front.text
    body = front.json()
    assert body["objectives"] == [
        {"metric": "val_data_loss", "direction": "minimize"},
        {"metric": "n_parameters", "direction": "minimize"},
    ]
    assert body["complete_trials"] == 6
    on_front = {t["id"] for t in body["trials"]}
    points = {t.id: tuple(float(v or 0) for v in t.objective_values or ()) for t in complete}
    for trial_id, point in points.items():  # the front is exactly the non-dominated trials
        beaten = any(dominates(other, point) for other in points.values())
        assert (trial_id in on_front) == (not beaten)
    # and it is Optuna's own front of the same trials
    optuna_numbers = {t.id: t.optuna_trial_id for t in complete}
    assert sorted(optuna_numbers[trial_id] or 0 for trial_id in on_front) == optuna_front
    assert client.get("/api/v1/studies/999999/pareto").status_code == 404


def test_a_parallel_multi_objective_study_tells_optuna_every_value(tmp_path: Path) -> None:
    """The shared-storage strategy (several trials at once), on the in-memory queue."""
    queue, storage, trainer = InMemoryWorkQueue(), optuna.storages.InMemoryStorage(), FakeTrainer()
    spec = StudySpec.model_validate(
        multi_spec(
            objective=[{"metric": "val_loss"}, {"metric": "epoch_time_s"}],
            budget={"n_trials": 3, "max_epochs": 2, "max_parallel_trials": 2},
        )
    )
    study_id = queued(queue, spec)
    assert make_loop(queue, storage, trainer, tmp_path).run() == 0
    trials = queue.trials(study_id)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    name = queue.study(study_id).optuna_study_name
    told = {t.number: t.values for t in optuna.load_study(study_name=name, storage=storage).trials}
    for trial in trials:
        assert trial.objective_values is not None
        assert trial.objective_values[0] == trial.value
        assert trial.objective_values[1] == pytest.approx(0.01 / 2)  # wall time / epochs
        assert told[trial.optuna_trial_id or 0] == pytest.approx(trial.objective_values)

"""The dashboard's data endpoints, on SQLite and PostgreSQL: study overviews, columnar
summaries (best so far), per-epoch values, the filtered trial table, Optuna's importances."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.api import create_app
from service.config import Settings
from service.db.models import utcnow
from service.studies.analysis import best_so_far
from tests.api_fixtures import TestClient, seed_study, seed_trial

pytest_plugins = ["tests.api_fixtures"]


def get(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(f"/api/v1{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


# --- the studies page: progress of each study ----------------------------------------------


def test_overview_counts_each_studys_trials(client: TestClient, db: sessionmaker[Session]) -> None:
    running = seed_study(db, name="running", status="running", n_trials=6)
    for number, state in enumerate(["complete", "complete", "pruned", "failed", "running"]):
        seed_trial(db, running, number, state=state, value=0.5 if state == "complete" else None)
    queued = seed_study(db, name="queued", n_trials=4)

    page = get(client, "/dashboard/studies")

    assert page["total"] == 2
    by_name = {item["name"]: item for item in page["items"]}
    assert [item["id"] for item in page["items"]] == [queued, running]  # newest first
    assert by_name["running"]["finished_trials"] == 4
    assert by_name["running"]["trial_counts"] == {
        "complete": 2,
        "pruned": 1,
        "failed": 1,
        "running": 1,
        "waiting": 0,
    }
    assert by_name["running"]["n_trials"] == 6
    assert by_name["queued"]["finished_trials"] == 0
    assert set(by_name["queued"]["trial_counts"].values()) == {0}
    assert get(client, "/dashboard/studies", status="queued")["total"] == 1


# --- the study page: every trial as columns ---------------------------------------------------

TRIALS: list[tuple[str, float | None]] = [
    ("complete", 0.5),
    ("pruned", None),
    ("complete", 0.7),
    ("complete", 0.2),
    ("failed", None),
    ("complete", 0.9),
    ("running", None),
]


@pytest.mark.parametrize(
    ("direction", "expected", "best_number"),
    [
        ("minimize", [0.5, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2], 3),
        ("maximize", [0.5, 0.5, 0.7, 0.7, 0.7, 0.9, 0.9], 5),
    ],
)
def test_summary_columns_and_best_so_far(
    client: TestClient,
    db: sessionmaker[Session],
    direction: str,
    expected: list[float],
    best_number: int,
) -> None:
    study = seed_study(db, status="running", direction=direction, n_trials=7)
    for number, (state, value) in enumerate(TRIALS):
        params: dict[str, Any] = {"optimizer": "sgd" if number % 2 else "adam", "lr": 0.1 * number}
        if number % 2:
            params["momentum"] = 0.9  # conditional: present on some trials only
        seed_trial(
            db,
            study,
            number,
            state=state,
            value=value,
            params=params,
            metrics={"train_error": 0.1, "val_error": 0.25, "val_accuracy": 0.75},
            diagnosis="overfitting" if number == 0 else None,
            finished_at=None if state == "running" else utcnow(),
        )

    summary = unpacked(get(client, f"/studies/{study}/summary"))

    assert summary["direction"] == direction
    assert summary["number"] == list(range(7))
    assert summary["state"] == [state for state, _ in TRIALS]
    assert summary["value"] == [value for _, value in TRIALS]
    assert summary["best_so_far"] == pytest.approx(expected)
    assert summary["best_number"] == best_number
    assert summary["params"]["optimizer"] == ["adam", "sgd"] * 3 + ["adam"]
    assert summary["params"]["momentum"] == [None, 0.9] * 3 + [None]
    assert summary["params"]["lr"] == pytest.approx([0.1 * n for n in range(7)])
    assert summary["diagnosis"] == ["overfitting"] + [None] * 6
    assert summary["train_error"] == [0.1] * 7
    assert summary["val_error"] == [0.25] * 7
    assert summary["trial_counts"]["complete"] == 4
    assert summary["trial_counts"]["waiting"] == 0


def unpacked(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with its coded columns decoded (as the dashboard's study.js does)."""
    labels = summary["labels"]

    def decode(column: list[int | None], names: list[str]) -> list[str | None]:
        return [None if code is None else names[code] for code in column]

    params = {
        name: decode(column, labels[f"params.{name}"]) if f"params.{name}" in labels else column
        for name, column in summary["params"].items()
    }
    return {
        **summary,
        "state": decode(summary["state"], labels["state"]),
        "diagnosis": decode(summary["diagnosis"], labels["diagnosis"]),
        "params": params,
    }


def test_summary_packs_repeated_strings_and_rounds_floats(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study = seed_study(db, status="running")
    for number in range(4):
        seed_trial(
            db,
            study,
            number,
            value=1 / 3 + number,
            params={"optimizer": ["adam", "sgd"][number % 2], "lr": 0.123456789, "bn": True},
            metrics={"train_error": 0.1, "val_error": 2 / 3},
            diagnosis="overfitting",
        )
    raw = client.get(f"/api/v1/studies/{study}/summary")
    assert raw.status_code == 200, raw.text
    summary = raw.json()
    assert summary["labels"]["state"] == ["complete"]
    assert summary["state"] == [0, 0, 0, 0]
    assert summary["labels"]["params.optimizer"] == ["adam", "sgd"]
    assert summary["params"]["optimizer"] == [0, 1, 0, 1]
    assert summary["params"]["bn"] == [True] * 4  # not coded: booleans are short already
    assert summary["params"]["lr"] == [0.123457] * 4
    assert summary["value"][0] == 0.333333
    assert summary["diagnosis"] == [0] * 4
    assert summary["labels"]["diagnosis"] == ["overfitting"]
    assert "0.123457," in raw.text  # six digits on the wire, not 0.123456789


def test_summary_errors_from_accuracy_and_nothing_before_the_first_value(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study = seed_study(db, status="running")
    seed_trial(db, study, 0, state="running", value=None, metrics=None, finished_at=None)
    seed_trial(db, study, 1, metrics={"train_accuracy": 0.75, "val_accuracy": 0.5, "x": [1]})

    summary = unpacked(get(client, f"/studies/{study}/summary"))

    assert summary["best_so_far"] == [None, 0.5]
    assert summary["train_error"] == [None, 0.25]
    assert summary["val_error"] == [None, 0.5]


def test_summary_of_an_empty_and_of_a_missing_study(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study = seed_study(db)
    summary = get(client, f"/studies/{study}/summary")
    assert summary["number"] == summary["best_so_far"] == []
    assert summary["params"] == {}
    assert summary["best_number"] is None
    assert client.get("/api/v1/studies/999999/summary").status_code == 404


def test_best_so_far_skips_missing_values() -> None:
    assert best_so_far([None, 3.0, None, 1.0, 2.0], "minimize") == [None, 3.0, 3.0, 1.0, 1.0]
    assert best_so_far([None, 3.0, None, 1.0, 4.0], "maximize") == [None, 3.0, 3.0, 3.0, 4.0]


# --- per-epoch values -------------------------------------------------------------------------


def test_intermediate_values_of_the_latest_trials_pruned_included(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study = seed_study(db, status="running", objective_metric="val_loss")
    seed_trial(db, study, 0, epochs=4)
    seed_trial(db, study, 1, epochs=2, state="pruned", value=None)
    seed_trial(db, study, 2, epochs=3, state="running", value=None, finished_at=None)
    seed_trial(db, study, 3, epochs=0, state="running", value=None, finished_at=None)

    every = get(client, f"/studies/{study}/intermediate")
    assert every["metric"] == "val_loss"
    assert every["total_trials"] == 4
    assert every["number"] == [0, 1, 2]  # trial 3 has no epoch yet
    assert every["state"] == ["complete", "pruned", "running"]
    assert every["epoch"] == [[1, 2, 3, 4], [1, 2], [1, 2, 3]]
    assert every["value"][1] == pytest.approx([1.5, 0.75])  # seed_trial: val_loss = 1.5/epoch

    latest = get(client, f"/studies/{study}/intermediate", latest=3)
    assert latest["number"] == [1, 2]
    assert client.get(f"/api/v1/studies/{study}/intermediate?latest=0").status_code == 422


def test_intermediate_values_follow_the_objective_metric(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study = seed_study(db, objective_metric="val_accuracy", direction="maximize")
    seed_trial(db, study, 0, epochs=2)
    assert get(client, f"/studies/{study}/intermediate")["value"] == [[0.4, 0.4]]


@pytest.mark.parametrize(
    ("metric", "regression", "expected"),
    [("val_data_loss", False, [1.2, 0.6]), ("val_mae", True, [0.9, 0.45])],
)
def test_intermediate_values_of_every_epoch_metric(
    client: TestClient,
    db: sessionmaker[Session],
    metric: str,
    regression: bool,
    expected: list[float],
) -> None:
    study = seed_study(db, objective_metric=metric)
    seed_trial(db, study, 0, epochs=2, regression=regression)
    assert get(client, f"/studies/{study}/intermediate")["value"] == [expected]


# --- the trial table ----------------------------------------------------------------------


@pytest.fixture
def table_study(db: sessionmaker[Session]) -> int:
    study = seed_study(db, status="running")
    rows: list[tuple[str, float | None, str | None]] = [
        ("complete", 0.3, "good_fit"),
        ("complete", 0.1, "overfitting"),
        ("pruned", None, None),
        ("complete", 0.2, "overfitting"),
        ("failed", None, None),
        ("complete", 0.4, "underfitting"),
    ]
    for number, (state, value, diagnosis) in enumerate(rows):
        labels = {1: ",dead_units,", 5: ",not_learning,vanishing_gradients,"}.get(number)
        seed_trial(
            db,
            study,
            number,
            state=state,
            value=value,
            diagnosis=diagnosis,
            duration_s=number,
            problem_labels=labels,
        )
    return study


def table(client: TestClient, study: int, **params: Any) -> tuple[list[int], int]:
    page = get(client, f"/studies/{study}/table", **params)
    return [item["number"] for item in page["items"]], page["total"]


def test_table_filters_by_diagnosis_and_state(client: TestClient, table_study: int) -> None:
    assert table(client, table_study) == ([0, 1, 2, 3, 4, 5], 6)
    assert table(client, table_study, diagnosis="overfitting") == ([1, 3], 2)
    assert table(client, table_study, diagnosis=["overfitting", "good_fit"]) == ([0, 1, 3], 3)
    assert table(client, table_study, diagnosis="none") == ([2, 4], 2)
    assert table(client, table_study, state=["pruned", "failed"]) == ([2, 4], 2)
    assert table(client, table_study, state="complete", diagnosis="overfitting") == ([1, 3], 2)
    assert table(client, table_study, diagnosis="no-such-label") == ([], 0)


def test_table_filters_by_training_problem(client: TestClient, table_study: int) -> None:
    assert table(client, table_study, problem="dead_units") == ([1], 1)
    assert table(client, table_study, problem="vanishing_gradients") == ([5], 1)
    assert table(client, table_study, problem="diverged") == ([], 0)
    assert table(client, table_study, problem="not_learning", state="pruned") == ([], 0)
    page = get(client, f"/studies/{table_study}/table", problem="not_learning")
    assert page["items"][0]["problem_labels"] == ["not_learning", "vanishing_gradients"]
    bad = client.get(f"/api/v1/studies/{table_study}/table", params={"problem": "x"})
    assert bad.status_code == 422


def test_table_sorts_with_empty_values_last_and_pages(client: TestClient, table_study: int) -> None:
    assert table(client, table_study, sort="value") == ([1, 3, 0, 5, 2, 4], 6)
    assert table(client, table_study, sort="value", order="desc") == ([5, 0, 3, 1, 2, 4], 6)
    assert table(client, table_study, sort="duration_s", order="desc", limit=2) == ([5, 4], 6)
    assert table(client, table_study, sort="diagnosis", limit=2, offset=1) == ([1, 3], 6)
    assert table(client, table_study, sort="number", order="desc", offset=4) == ([1, 0], 6)
    bad = client.get(f"/api/v1/studies/{table_study}/table", params={"sort": "params"})
    assert bad.status_code == 422


def test_table_and_diagnoses_of_a_missing_study(client: TestClient, table_study: int) -> None:
    assert get(client, f"/studies/{table_study}/diagnoses") == [
        "good_fit",
        "overfitting",
        "underfitting",
    ]
    assert client.get("/api/v1/studies/999999/table").status_code == 404
    assert client.get("/api/v1/studies/999999/diagnoses").status_code == 404


# --- parameter importances ------------------------------------------------------------------


def make_optuna_study(url: str, name: str, n_trials: int) -> None:
    """An Optuna study in the test database whose objective depends on x alone."""

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        trial.suggest_float("y", -10, 10)
        trial.suggest_categorical("c", ["a", "b"])
        return x * x

    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
        )
        study.optimize(objective, n_trials=n_trials)
    finally:
        storage.engine.dispose()


def test_importances_rank_the_parameter_that_decides_the_objective_first(
    client: TestClient, db: sessionmaker[Session], migrated_database_url: str
) -> None:
    make_optuna_study(migrated_database_url, "hps-importance", 40)
    study = seed_study(db, optuna_study_name="hps-importance", status="completed")
    for number in range(3):
        seed_trial(db, study, number)

    importances = get(client, f"/studies/{study}/importances")

    assert importances["note"] is None
    assert importances["evaluator"] == "fanova"
    assert importances["n_trials"] == 40
    assert sorted(importances["params"]) == ["c", "x", "y"]
    assert importances["params"][0] == "x"
    assert math.fsum(importances["importances"]) == pytest.approx(1.0, abs=1e-6)
    assert importances["importances"][0] > 0.8
    assert importances["importances"] == sorted(importances["importances"], reverse=True)
    again = get(client, f"/studies/{study}/importances")  # seeded: the same answer each time
    assert again["importances"] == pytest.approx(importances["importances"])


def test_importances_need_complete_trials_and_an_optuna_record(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    young = seed_study(db)
    seed_trial(db, young, 0)
    answer = get(client, f"/studies/{young}/importances")
    assert (answer["params"], answer["note"]) == ([], "needs two complete trials")

    seeded_only = seed_study(db)  # trials written directly: no worker, so no Optuna study
    for number in range(3):
        seed_trial(db, seeded_only, number)
    answer = get(client, f"/studies/{seeded_only}/importances")
    assert answer["params"] == []
    assert "Optuna has no record" in answer["note"]
    assert client.get("/api/v1/studies/999999/importances").status_code == 404


# --- access and the spec parser -------------------------------------------------------------


def test_reads_need_the_token(anonymous: TestClient, db: sessionmaker[Session]) -> None:
    study = seed_study(db)
    for path in ("/dashboard/studies", f"/studies/{study}/summary", f"/studies/{study}/table"):
        assert anonymous.get(f"/api/v1{path}").status_code == 401


def test_parse_spec_reads_yaml_and_json(client: TestClient, anonymous: TestClient) -> None:
    def parse(text: str, through: TestClient = client) -> Any:
        return through.post(
            "/api/v1/dashboard/parse-spec",
            content=text.encode(),
            headers={"Content-Type": "text/plain"},
        )

    yaml_text = "name: pasted\nbudget:\n  n_trials: 3\n  max_epochs: 2\n"
    assert parse(yaml_text).json() == {"name": "pasted", "budget": {"n_trials": 3, "max_epochs": 2}}
    assert parse('{\n\t"name": "tabs"\n}').json() == {"name": "tabs"}  # JSON that YAML refuses
    assert parse("- a\n- b\n").status_code == 422
    assert parse("name: [unclosed\n").status_code == 422
    assert parse(yaml_text, anonymous).status_code == 401


def test_parse_spec_refuses_an_alias_bomb_and_deep_nesting(client: TestClient) -> None:
    def parse(text: str) -> Any:
        return client.post(
            "/api/v1/dashboard/parse-spec",
            content=text.encode(),
            headers={"Content-Type": "text/plain"},
        )

    # ~400 bytes whose aliases expand to 9^8 (43 million) strings: the "billion laughs"
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [{','.join(['*' + previous] * 9)}]\n"
    assert len(bomb) < 500
    response = parse(bomb)
    assert response.status_code == 422
    assert "YAML aliases" in response.json()["detail"][0]["msg"]
    for deep in ("[" * 100_000 + "]" * 100_000, "a:\n" + "- " * 20_000 + "x\n"):
        response = parse(deep)
        assert response.status_code == 422, response.text[:200]


def test_public_read_opens_the_reads_not_the_writes(
    api_settings: Settings, db: sessionmaker[Session]
) -> None:
    study = seed_study(db)
    seed_trial(db, study, 0)
    public = api_settings.model_copy(update={"public_read": True})
    with TestClient(create_app(public)) as anonymous:
        for path in ("/dashboard/studies", f"/studies/{study}/summary", f"/studies/{study}/table"):
            assert anonymous.get(f"/api/v1{path}").status_code == 200, path
        assert anonymous.post("/api/v1/dashboard/parse-spec", content=b"a: 1").status_code == 401

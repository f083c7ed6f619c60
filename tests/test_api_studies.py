"""Studies over the API: submit, list, read, cancel, delete (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import optuna
import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db.models import Study, Trial, TrialEpoch, TrialState, utcnow
from tests.api_fixtures import TestClient, seed_study, seed_trial, valid_spec

pytest_plugins = ["tests.api_fixtures"]

STUDIES = "/api/v1/studies"


def test_a_study_without_a_timeout_gets_the_servers_ceiling(
    client: TestClient, api_settings: Settings
) -> None:
    response = client.post(STUDIES, json=valid_spec(budget={"n_trials": 3}))
    assert response.status_code == 201, response.text
    assert response.json()["timeout_s"] == api_settings.max_timeout_s


def test_submit_queues_the_study_and_stores_what_the_worker_needs(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    spec = valid_spec(
        objective={"metric": "val_accuracy"},
        budget={"n_trials": 7, "max_parallel_trials": 2, "timeout_s": 600},
        priority=5,
    )
    response = client.post(STUDIES, json=spec)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert body["name"] == "lr-search"
    assert body["direction"] == "maximize"  # accuracies are maximized unless told otherwise
    assert (body["n_trials"], body["max_parallel_trials"], body["timeout_s"]) == (7, 2, 600)
    assert body["priority"] == 5
    assert "spec" not in body
    with db() as session:
        study = session.get(Study, body["id"])
        assert study is not None
        assert study.objective_metric == "val_accuracy"
        assert study.optuna_study_name.startswith("hps-")
        assert study.spec["search_space"]["learning_rate"]["log"] is True
        assert study.spec["budget"]["max_epochs"] == 20  # defaults are stored, for the worker
    second = client.post(STUDIES, json=spec).json()
    with db() as session:
        names = session.scalars(select(Study.optuna_study_name)).all()
    assert second["id"] != body["id"]
    assert len(set(names)) == 2


REGULARIZER_SPACE = {
    "regularizer": {"type": "categorical", "choices": ["none", "l1", "l2"]},
    "lambda": {
        "type": "float",
        "low": 1e-5,
        "high": 1e-1,
        "log": True,
        "when": {"regularizer": ["l1", "l2"]},
    },
}


def test_searching_a_regularizer_with_the_penalized_val_loss_is_queued_with_a_warning(
    client: TestClient,
) -> None:
    response = client.post(
        STUDIES, json=valid_spec(search_space=REGULARIZER_SPACE, objective={"metric": "val_loss"})
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "queued"
    [warning] = body["warnings"]
    assert "'val_loss' includes the regularization penalty" in warning
    assert "regularizer, lambda" in warning
    assert "'val_data_loss'" in warning
    detail = client.get(f"{STUDIES}/{body['id']}").json()
    assert detail["warnings"] == body["warnings"]  # a reader of the study sees it too


def test_the_default_objective_is_the_data_loss_and_needs_no_warning(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    response = client.post(STUDIES, json=valid_spec(search_space=REGULARIZER_SPACE))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["warnings"] == []
    assert (body["objective_metric"], body["direction"]) == ("val_data_loss", "minimize")
    without_regularizer = client.post(STUDIES, json=valid_spec(objective={"metric": "val_loss"}))
    assert without_regularizer.json()["warnings"] == []  # no penalty searched: nothing bent


def test_list_filters_by_status_and_pages_newest_first(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    ids = [
        seed_study(db, name=f"s{i}", status="queued" if i % 2 else "completed") for i in range(5)
    ]
    page = client.get(STUDIES, params={"limit": 2}).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 0)
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    rest = client.get(STUDIES, params={"limit": 2, "offset": 4}).json()
    assert [item["id"] for item in rest["items"]] == [ids[0]]
    queued = client.get(STUDIES, params={"status": "queued"}).json()
    assert queued["total"] == 2
    assert {item["status"] for item in queued["items"]} == {"queued"}
    assert all("spec" not in item for item in queued["items"])


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 201}, "limit"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset"),
     ({"status": "sleeping"}, "status")],
)  # fmt: skip
def test_list_rejects_bad_query_parameters(
    client: TestClient, params: dict[str, object], field: str
) -> None:
    response = client.get(STUDIES, params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_get_counts_trials_by_state_and_shows_the_best_trial(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study_id = seed_study(db, status="running", started_at=utcnow())
    seed_trial(db, study_id, 0, value=0.9)
    best = seed_trial(db, study_id, 1, value=0.2, params={"optimizer": "sgd"})
    seed_trial(db, study_id, 2, value=0.5)
    seed_trial(db, study_id, 3, state="pruned", value=0.1)  # pruned: never the best
    seed_trial(db, study_id, 4, state="running", value=None, finished_at=None)
    seed_trial(db, study_id, 5, state="failed", value=None)
    response = client.get(f"{STUDIES}/{study_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "running"
    assert body["trial_counts"] == {
        "running": 1, "complete": 3, "pruned": 1, "failed": 1, "waiting": 0,
    }  # fmt: skip
    assert body["best_trial"]["id"] == best
    assert body["best_trial"]["number"] == 1
    assert body["best_trial"]["params"] == {"optimizer": "sgd"}
    assert body["best_trial"]["metrics"]["val"] == {"loss": 0.6}
    assert body["spec"]["name"] == "lr-search"
    assert body["started_at"] is not None


def test_get_prefers_the_recorded_best_trial_and_maximizes_when_told(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study_id = seed_study(db, direction="maximize")
    seed_trial(db, study_id, 0, value=0.3)
    top = seed_trial(db, study_id, 1, value=0.8)
    assert client.get(f"{STUDIES}/{study_id}").json()["best_trial"]["id"] == top
    with db.begin() as session:
        recorded = session.get(Study, study_id)
        assert recorded is not None
        recorded.best_trial_id = seed_trial(db, study_id, 2, value=0.5)
    assert client.get(f"{STUDIES}/{study_id}").json()["best_trial"]["number"] == 2


def test_a_study_without_trials_has_zero_counts_and_no_best(client: TestClient) -> None:
    study_id = client.post(STUDIES, json=valid_spec()).json()["id"]
    body = client.get(f"{STUDIES}/{study_id}").json()
    assert set(body["trial_counts"].values()) == {0}
    assert body["best_trial"] is None


def test_unknown_study_is_404(client: TestClient) -> None:
    for method, path in [
        ("GET", f"{STUDIES}/999"),
        ("POST", f"{STUDIES}/999/cancel"),
        ("DELETE", f"{STUDIES}/999"),
        ("GET", f"{STUDIES}/999/trials"),
        ("GET", f"{STUDIES}/999/export"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert "999" in response.json()["detail"]


def extend(client: TestClient, study_id: int, n_trials: Any) -> Any:
    return client.post(f"{STUDIES}/{study_id}/extend", json={"n_trials": n_trials})


def test_extending_a_queued_or_running_study_adds_to_its_budget(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    queued = client.post(STUDIES, json=valid_spec(budget={"n_trials": 10})).json()["id"]
    body = extend(client, queued, 3).json()
    assert (body["status"], body["n_trials"]) == ("queued", 13)
    running = seed_study(db, status="running", started_at=utcnow(), n_trials=4)
    seed_trial(db, running, 0, state=TrialState.RUNNING.value)
    body = extend(client, running, 2).json()
    assert (body["status"], body["n_trials"], body["finished_at"]) == ("running", 6, None)


def test_extending_a_completed_study_queues_it_again_for_that_many_more_trials(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    done = seed_study(db, status="completed", n_trials=2, started_at=utcnow(), finished_at=utcnow())
    for number in range(2):
        seed_trial(db, done, number)
    body = extend(client, done, 3).json()
    assert (body["status"], body["n_trials"], body["finished_at"]) == ("queued", 5, None)
    # a study that ran out of time with 3 of 10 trials: 3 + 2, and its note is gone
    timed_out = seed_study(
        db,
        status="completed",
        n_trials=10,
        finished_at=utcnow(),
        error="time budget of 60 s ran out after 3 trials",
    )
    for number in range(3):
        seed_trial(db, timed_out, number)
    body = extend(client, timed_out, 2).json()
    assert (body["status"], body["n_trials"], body["error"]) == ("queued", 5, None)
    assert client.get(f"{STUDIES}/{timed_out}").json()["trial_counts"]["complete"] == 3


@pytest.mark.parametrize(
    "columns",
    [
        {"status": "failed"},
        {"status": "cancelled"},
        {"status": "running", "cancel_requested": True},
    ],
    ids=["failed", "cancelled", "being-cancelled"],
)
def test_a_study_that_cannot_run_again_is_not_extended(
    client: TestClient, db: sessionmaker[Session], columns: dict[str, Any]
) -> None:
    study_id = seed_study(db, n_trials=4, **columns)
    response = extend(client, study_id, 2)
    assert response.status_code == 409, response.text
    assert "only a queued, running or completed study can be extended" in response.text
    assert client.get(f"{STUDIES}/{study_id}").json()["n_trials"] == 4  # nothing changed


def test_extend_refuses_bad_counts_unknown_studies_and_budgets_over_the_limit(
    client: TestClient, api_settings: Settings
) -> None:
    study_id = client.post(STUDIES, json=valid_spec(budget={"n_trials": 10})).json()["id"]
    for bad in (0, -1, "many"):
        assert extend(client, study_id, bad).status_code == 422
    assert extend(client, 999_999, 1).status_code == 404
    over = extend(client, study_id, api_settings.max_trials_per_study)
    assert over.status_code == 422
    assert f"at most {api_settings.max_trials_per_study} trials per study" in over.text
    assert client.get(f"{STUDIES}/{study_id}").json()["n_trials"] == 10


def test_cancel_a_queued_study_cancels_it_at_once(client: TestClient) -> None:
    study_id = client.post(STUDIES, json=valid_spec()).json()["id"]
    response = client.post(f"{STUDIES}/{study_id}/cancel")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["finished_at"] is not None
    assert client.get(f"{STUDIES}/{study_id}").json()["status"] == "cancelled"


def test_cancel_a_running_study_asks_the_worker_to_stop(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study_id = seed_study(db, status="running", started_at=utcnow())
    seed_trial(db, study_id, 0, state=TrialState.RUNNING.value)
    body = client.post(f"{STUDIES}/{study_id}/cancel").json()
    assert (body["status"], body["cancel_requested"], body["finished_at"]) == (
        "running",
        True,
        None,
    )
    again = client.post(f"{STUDIES}/{study_id}/cancel")  # asking twice is harmless
    assert again.status_code == 200
    assert again.json()["cancel_requested"] is True


def test_cancel_a_running_study_with_no_trial_running_cancels_it_at_once(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    # Only a retry (or a claim a stopping worker gave back) waits: no trial's end would
    # come to finish the study, so the cancel does.
    study_id = seed_study(db, status="running", started_at=utcnow())
    seed_trial(db, study_id, 0)
    seed_trial(db, study_id, 1, state=TrialState.WAITING.value)
    body = client.post(f"{STUDIES}/{study_id}/cancel").json()
    assert (body["status"], body["cancel_requested"]) == ("cancelled", True)
    assert body["finished_at"] is not None
    assert client.get(f"{STUDIES}/{study_id}").json()["status"] == "cancelled"


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancel_a_finished_study_is_a_conflict(
    client: TestClient, db: sessionmaker[Session], status: str
) -> None:
    study_id = seed_study(db, status=status, finished_at=utcnow())
    response = client.post(f"{STUDIES}/{study_id}/cancel")
    assert response.status_code == 409
    assert status in response.json()["detail"]


def test_delete_a_running_study_is_a_conflict(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study_id = seed_study(db, status="running")
    seed_trial(db, study_id, 0)
    response = client.delete(f"{STUDIES}/{study_id}")
    assert response.status_code == 409
    assert "running" in response.json()["detail"]
    assert client.get(f"{STUDIES}/{study_id}").status_code == 200


def test_delete_removes_trials_epochs_checkpoints_and_the_optuna_study(
    client: TestClient,
    db: sessionmaker[Session],
    api_settings: Settings,
    migrated_database_url: str,
    request: pytest.FixtureRequest,
) -> None:
    study_id = seed_study(db, status="completed", finished_at=utcnow())
    other_id = seed_study(db, status="completed")
    first = seed_trial(db, study_id, 0, epochs=3)
    seed_trial(db, study_id, 1, epochs=2, retry_of_id=first)
    kept = seed_trial(db, other_id, 0, epochs=2)
    with db.begin() as session:
        study = session.get(Study, study_id)
        assert study is not None
        study.best_trial_id = first
        optuna_name = study.optuna_study_name
    storage = optuna.storages.RDBStorage(migrated_database_url)
    request.addfinalizer(storage.engine.dispose)  # no connection outlives the test
    optuna.create_study(study_name=optuna_name, storage=storage)
    checkpoints = api_settings.checkpoint_dir / f"study-{study_id}" / "trial-0"
    checkpoints.mkdir(parents=True)
    (checkpoints / "best.ckpt").write_bytes(b"weights")

    response = client.delete(f"{STUDIES}/{study_id}")

    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"{STUDIES}/{study_id}").status_code == 404
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Trial)) == 1
        assert session.scalar(select(Trial.id)) == kept
        epochs = session.scalars(select(TrialEpoch.trial_id)).all()
        assert set(epochs) == {kept}
    assert not (api_settings.checkpoint_dir / f"study-{study_id}").exists()
    assert optuna_name not in optuna.get_all_study_names(storage=storage)


def test_delete_a_study_optuna_never_saw(client: TestClient, db: sessionmaker[Session]) -> None:
    study_id = seed_study(db, status="cancelled", finished_at=utcnow() - timedelta(days=1))
    assert client.delete(f"{STUDIES}/{study_id}").status_code == 204
    assert client.get(STUDIES).json()["total"] == 0


@pytest.mark.parametrize(
    ("status", "group_bys"), [("running", 2), ("completed", 1), ("cancelled", 1), ("failed", 2)]
)
def test_a_settled_study_counts_its_trials_once(
    client: TestClient, db: sessionmaker[Session], status: str, group_bys: int
) -> None:
    study_id = seed_study(db, status=status, finished_at=None if status == "running" else utcnow())
    seed_trial(db, study_id, 0, state="complete", value=0.5)
    seed_trial(db, study_id, 1, state="pruned")
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        first = client.get(f"{STUDIES}/{study_id}").json()["trial_counts"]
        second = client.get(f"{STUDIES}/{study_id}").json()["trial_counts"]
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert first == second
    assert (first["complete"], first["pruned"], first["running"]) == (1, 1, 0)
    assert sum("GROUP BY" in statement for statement in statements) == group_bys

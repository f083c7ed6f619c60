"""A study's trials over the API: pages, one trial with its curve, checkpoints, export."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db.models import Trial, utcnow
from service.studies import TrialTable
from service.studies.schemas import Page, TrialRead
from tests.api_fixtures import TestClient, seed_study, seed_trial

pytest_plugins = ["tests.api_fixtures"]

VALUES = [0.7, 0.2, None, 0.9, 0.4, None, 0.1]
"""Trial values by number; None: still running."""


@pytest.fixture
def study_id(db: sessionmaker[Session]) -> int:
    study = seed_study(db, status="running")
    for number, value in enumerate(VALUES):
        running = value is None
        seed_trial(
            db,
            study,
            number,
            value=value,
            state="running" if running else ("pruned" if number == 4 else "complete"),
            finished_at=None if running else utcnow(),
            duration_s=None if running else 10.0 + number,
            params={"optimizer": "sgd" if number % 2 else "adam", "learning_rate": 0.01 * number},
            epochs=2,
            problems=PROBLEMS if number == 1 else None,
            problem_labels=",vanishing_gradients,dead_units," if number == 1 else None,
        )
    return study


PROBLEMS = [
    {"label": "vanishing_gradients", "epoch": 2, "evidence": "ratio 1e-06", "hint": "use ReLU"},
    {"label": "dead_units", "epoch": 2, "evidence": "80% never active", "hint": "leaky_relu"},
]


def trials_of(client: TestClient, study: int, **params: str | int) -> dict[str, Any]:
    response = client.get(f"/api/v1/studies/{study}/trials", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def numbers(page: dict[str, Any]) -> list[int]:
    return [item["number"] for item in page["items"]]


def test_trials_page_by_number_without_epochs(client: TestClient, study_id: int) -> None:
    page = trials_of(client, study_id, limit=3, offset=2)
    assert (page["total"], page["limit"], page["offset"]) == (7, 3, 2)
    assert numbers(page) == [2, 3, 4]
    item = page["items"][0]
    assert "epochs" not in item
    assert item["params"] == {"optimizer": "adam", "learning_rate": 0.02}
    assert numbers(trials_of(client, study_id, order="desc", limit=2)) == [6, 5]


def test_trials_sort_by_value_with_missing_values_last(client: TestClient, study_id: int) -> None:
    assert numbers(trials_of(client, study_id, sort="value")) == [6, 1, 4, 0, 3, 2, 5]
    assert numbers(trials_of(client, study_id, sort="value", order="desc")) == [3, 0, 4, 1, 6, 2, 5]
    assert numbers(trials_of(client, study_id, sort="value", limit=2, offset=1)) == [1, 4]


def test_trials_filter_by_state(client: TestClient, study_id: int) -> None:
    running = trials_of(client, study_id, state="running")
    assert (running["total"], numbers(running)) == (2, [2, 5])
    complete = trials_of(client, study_id, state="complete", sort="value")
    assert numbers(complete) == [6, 1, 0, 3]


def test_trials_page_is_the_json_of_its_models(
    client: TestClient, db: sessionmaker[Session], study_id: int
) -> None:
    """The page splices the stored params/metrics JSON in by hand: it must be exactly what
    `Page[TrialRead]` of the same trials encodes (values, nulls, datetimes, key sets)."""
    retried = seed_trial(
        db,
        study_id,
        7,
        state="failed",
        value=None,
        metrics=None,
        params={"lambda": 1e-06, "units": [128, 64], "name": 'naïve "quoted"'},
        retry_of_id=None,
        diagnosis="overfitting",
        device="cuda:0",
        stopped_early=True,
        best_epoch=3,
    )
    seed_trial(db, study_id, 8, retry_of_id=retried, metrics={"val": {"loss": 1.5e-300}})
    with db() as session:
        trials = session.scalars(
            select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
        ).all()
        expected = Page[TrialRead](
            items=[TrialRead.model_validate(trial) for trial in trials[2:9]],
            total=9,
            limit=7,
            offset=2,
        )
    response = client.get(f"/api/v1/studies/{study_id}/trials", params={"limit": 7, "offset": 2})
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(expected.model_dump_json())


@pytest.mark.parametrize("status", ["completed", "cancelled", "running", "failed"])
def test_trials_pages_of_a_settled_study_count_its_trials_once(
    client: TestClient, db: sessionmaker[Session], status: str
) -> None:
    settled = status in ("completed", "cancelled")
    study = seed_study(db, status=status, finished_at=None if status == "running" else utcnow())
    for number in range(5):
        seed_trial(db, study, number, state="pruned" if number % 2 else "complete")
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]).lower())

    event.listen(Engine, "before_cursor_execute", record)
    try:
        pages = [
            trials_of(client, study, limit=2),
            trials_of(client, study, limit=2, offset=2),
            trials_of(client, study, state="pruned"),
            trials_of(client, study, state="complete", limit=1),
        ]
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert [page["total"] for page in pages] == [5, 5, 2, 3]
    assert [numbers(page) for page in pages] == [[0, 1], [2, 3], [1, 3], [0]]
    counts = sum("count(" in statement for statement in statements)
    # settled: the first page counts (and then counts by state, once); later pages never do
    assert counts == (2 if settled else 4)


def test_a_page_past_the_end_still_has_its_total(client: TestClient, study_id: int) -> None:
    page = trials_of(client, study_id, offset=50)
    assert (page["items"], page["total"]) == ([], 7)


@pytest.mark.parametrize(
    "params",
    [{"sort": "loss"}, {"order": "up"}, {"state": "done"}, {"limit": 500}],
)
def test_trials_reject_bad_query_parameters(
    client: TestClient, study_id: int, params: dict[str, str | int]
) -> None:
    response = client.get(f"/api/v1/studies/{study_id}/trials", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]


def test_trial_detail_has_its_curve_and_the_trial_it_retries(
    client: TestClient, db: sessionmaker[Session], study_id: int
) -> None:
    failed = seed_trial(db, study_id, 7, state="failed", value=None, error="CUDA out of memory")
    seed_trial(
        db, study_id, 8, epochs=3, retry_of_id=failed, resumed_from_epoch=1, diagnosis="overfit",
        best_epoch=2,
        best_metrics={"val_loss": 0.3}, diagnosis_detail="val loss rises after epoch 2",
    )  # fmt: skip
    response = client.get(f"/api/v1/studies/{study_id}/trials/8")
    assert response.status_code == 200
    trial = response.json()
    assert trial["number"] == 8
    assert trial["study_id"] == study_id
    assert [epoch["epoch"] for epoch in trial["epochs"]] == [1, 2, 3]
    assert trial["epochs"][1] == {
        "epoch": 2, "loss": 0.5, "accuracy": 0.5, "val_loss": 0.75, "val_accuracy": 0.4,
        "lr": 0.01, "mae": None, "val_mae": None, "data_loss": 0.45, "val_data_loss": 0.6,
        "kernel_grad_norms": [0.25, 0.05], "bias_grad_norms": None, "dead_units": None,
    }  # fmt: skip
    assert trial["retry_of"] == {"id": failed, "number": 7}
    assert trial["resumed_from_epoch"] == 1
    assert (trial["diagnosis"], trial["best_epoch"]) == ("overfit", 2)
    assert trial["best_metrics"] == {"val_loss": 0.3}
    assert trial["has_checkpoint"] is False
    original = client.get(f"/api/v1/studies/{study_id}/trials/7").json()
    assert original["error"] == "CUDA out of memory"
    assert original["retry_of"] is None
    assert original["epochs"] == []


def test_unknown_trial_is_404(client: TestClient, study_id: int) -> None:
    response = client.get(f"/api/v1/studies/{study_id}/trials/99")
    assert response.status_code == 404
    assert "99" in response.json()["detail"]
    assert client.get("/api/v1/studies/12345/trials/0").status_code == 404


def _point_checkpoint(db: sessionmaker[Session], study: int, number: int, path: str) -> None:
    with db.begin() as session:
        trial = session.query(Trial).filter_by(study_id=study, number=number).one()
        trial.checkpoint_path = path


def test_checkpoint_download(
    client: TestClient, db: sessionmaker[Session], api_settings: Settings, study_id: int
) -> None:
    target = api_settings.checkpoint_dir / f"study-{study_id}" / "trial-1" / "best.ckpt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\x00weights\x01" * 100)
    _point_checkpoint(db, study_id, 1, str(target))
    response = client.get(f"/api/v1/studies/{study_id}/trials/1/checkpoint")
    assert response.status_code == 200
    assert response.content == target.read_bytes()
    assert response.headers["content-type"] == "application/octet-stream"
    assert f"study-{study_id}-trial-1.ckpt" in response.headers["content-disposition"]
    assert client.get(f"/api/v1/studies/{study_id}/trials/1").json()["has_checkpoint"] is True


def test_checkpoint_without_one_or_missing_on_disk_is_404(
    client: TestClient, db: sessionmaker[Session], api_settings: Settings, study_id: int
) -> None:
    none = client.get(f"/api/v1/studies/{study_id}/trials/0/checkpoint")
    assert none.status_code == 404
    assert "no checkpoint" in none.json()["detail"]
    gone = api_settings.checkpoint_dir / f"study-{study_id}" / "trial-0" / "best.ckpt"
    _point_checkpoint(db, study_id, 0, str(gone))
    missing = client.get(f"/api/v1/studies/{study_id}/trials/0/checkpoint")
    assert missing.status_code == 404
    assert "no longer stored" in missing.json()["detail"]


def test_checkpoint_outside_the_checkpoint_dir_is_refused(
    client: TestClient,
    db: sessionmaker[Session],
    api_settings: Settings,
    study_id: int,
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not a checkpoint")
    inside = api_settings.checkpoint_dir / f"study-{study_id}"
    inside.mkdir(parents=True)
    os.symlink(secret, inside / "link.ckpt")
    for number, path in [
        (0, str(secret)),
        (1, str(inside / ".." / ".." / ".." / "secret.txt")),
        (3, str(inside / "link.ckpt")),  # a link inside that leads outside
    ]:
        _point_checkpoint(db, study_id, number, path)
        response = client.get(f"/api/v1/studies/{study_id}/trials/{number}/checkpoint")
        assert response.status_code == 403, path
        assert "outside" in response.json()["detail"]
        assert "not a checkpoint" not in response.text


def test_export_csv_has_one_flat_row_per_trial(client: TestClient, study_id: int) -> None:
    response = client.get(f"/api/v1/studies/{study_id}/export", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert f"study-{study_id}-trials.csv" in response.headers["content-disposition"]
    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == [
        "number", "state", "value", "param_optimizer", "param_learning_rate",
        "train_loss", "train_accuracy", "val_loss",
        "epochs_run", "best_epoch", "diagnosis", "problems", "duration_s", "confirmation",
    ]  # fmt: skip
    rows = list(reader)
    assert [row["number"] for row in rows] == [str(n) for n in range(7)]
    first, running = rows[1], rows[2]
    assert (first["state"], float(first["value"]), first["param_optimizer"]) == (
        "complete", 0.2, "sgd",
    )  # fmt: skip
    assert float(first["param_learning_rate"]) == pytest.approx(0.01)
    assert (float(first["train_loss"]), float(first["val_loss"])) == (0.5, 0.6)
    assert (first["epochs_run"], first["duration_s"]) == ("2", "11.0")
    assert first["problems"] == "vanishing_gradients;dead_units"
    assert rows[0]["problems"] == ""
    assert {row["confirmation"] for row in rows} == {"False"}
    assert (running["state"], running["value"], running["duration_s"]) == ("running", "", "")


def test_trial_detail_lists_its_training_problems_with_evidence_and_hints(
    client: TestClient, study_id: int
) -> None:
    detail = client.get(f"/api/v1/studies/{study_id}/trials/1").json()
    assert detail["problems"] == PROBLEMS
    assert client.get(f"/api/v1/studies/{study_id}/trials/0").json()["problems"] == []


def test_trials_filter_by_training_problem_and_list_their_labels(
    client: TestClient, study_id: int
) -> None:
    page = trials_of(client, study_id, problem="dead_units")
    assert (numbers(page), page["total"]) == ([1], 1)
    assert page["items"][0]["problem_labels"] == ["vanishing_gradients", "dead_units"]
    assert trials_of(client, study_id, problem="not_learning")["total"] == 0
    everything = trials_of(client, study_id)
    assert [item["problem_labels"] for item in everything["items"]][:3] == [
        [],
        ["vanishing_gradients", "dead_units"],
        [],
    ]
    assert client.get(f"/api/v1/studies/{study_id}/trials?problem=sadness").status_code == 422
    assert client.get("/api/v1/studies/999999/trials?problem=dead_units").status_code == 404


def test_export_json_has_the_same_rows(client: TestClient, study_id: int) -> None:
    response = client.get(f"/api/v1/studies/{study_id}/export", params={"format": "json"})
    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == 7
    assert rows[1]["value"] == 0.2
    assert rows[1]["train_accuracy"] == 0.8
    assert rows[2]["value"] is None
    assert list(rows[0]) == list(rows[2])  # every row has every column
    csv_header = client.get(f"/api/v1/studies/{study_id}/export").text.splitlines()[0]
    assert ",".join(rows[0]) == csv_header  # csv is the default format


def test_export_of_a_study_without_trials_and_bad_format(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    empty = seed_study(db)
    text = client.get(f"/api/v1/studies/{empty}/export").text
    assert text.strip() == (
        "number,state,value,epochs_run,best_epoch,diagnosis,problems,duration_s,confirmation"
    )
    response = client.get(f"/api/v1/studies/{empty}/export", params={"format": "xml"})
    assert response.status_code == 422


def test_json_export_has_no_nan() -> None:
    """A diverged trial's loss may be NaN or infinite: JSON gets null (CSV keeps `nan`)."""
    table = TrialTable(
        ("number", "val_loss"),
        ({"number": 0, "val_loss": float("nan")}, {"number": 1, "val_loss": float("inf")}),
    )
    assert table.to_records() == [{"number": 0, "val_loss": None}, {"number": 1, "val_loss": None}]
    assert "nan" in table.to_csv()

"""Studies side by side (GET /api/v1/compare), SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from tests.api_fixtures import TestClient, seed_study, valid_spec
from tests.test_report import seeded

pytest_plugins = ["tests.api_fixtures"]


def test_two_studies_of_one_dataset_side_by_side(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    better, worse = seeded(db, adam=0.1, sgd=0.3), seeded(db, adam=0.2, sgd=0.4)
    response = client.get("/api/v1/compare", params={"studies": [worse, better]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["id"] for s in body["studies"]] == [worse, better]  # in the order asked
    by_id = {s["id"]: s for s in body["studies"]}
    assert by_id[better]["best_value"] < by_id[worse]["best_value"]
    assert by_id[better]["leaders"]["optimizer"] == "optimizer=adam"
    assert [p["epoch"] for p in by_id[better]["best_curve"]] == [1, 2, 3]
    assert by_id[better]["best_curve"][0]["value"] == 1.2  # the seeded val_data_loss of epoch 1
    assert body["sentences"][0].startswith(f"study {better} 'seeded' has the best val_data_loss")
    assert "every study found optimizer=adam best" in body["sentences"]


def test_studies_of_other_data_unknown_ids_and_a_single_study_are_refused(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    digits = seeded(db, adam=0.1, sgd=0.3)
    other = seed_study(db, spec=valid_spec(dataset={"name": "synthetic"}))
    response = client.get("/api/v1/compare", params={"studies": [digits, other]})
    assert response.status_code == 422
    [issue] = response.json()["detail"]
    assert issue["loc"] == ["query", "studies", 1]
    assert "trained on other data" in issue["msg"]
    unknown = client.get("/api/v1/compare", params={"studies": [digits, 999_999]})
    assert unknown.status_code == 422
    assert "no study has id 999999" in unknown.text
    assert client.get("/api/v1/compare", params={"studies": [digits]}).status_code == 422
    assert client.get("/api/v1/compare", params={"studies": [digits, digits]}).status_code == 422

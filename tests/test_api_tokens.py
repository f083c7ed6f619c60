"""Issued tokens (SQLite and PostgreSQL): scopes, ownership, limits, revocation."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import service.api.runtime as runtime_module
from service.db.models import ApiToken, Dataset, Study
from tests.api_fixtures import TestClient, valid_spec
from tests.test_api_datasets import make_csv

pytest_plugins = ["tests.api_fixtures"]


def issue(client: TestClient, name: str, **limits: Any) -> str:
    response = client.post("/api/v1/tokens", json={"name": name, **limits})
    assert response.status_code == 201, response.text
    secret: str = response.json()["token"]
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def submit(client: TestClient, secret: str, **spec: Any) -> Any:
    return client.post("/api/v1/studies", json=valid_spec(**spec), headers=bearer(secret))


def test_an_issued_token_is_shown_once_and_stored_only_as_its_digest(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    secret = issue(client, "ci-pipeline", scope="write", max_priority=5)
    assert secret.startswith("hps_")
    assert len(secret) > 40
    listed = client.get("/api/v1/tokens").json()
    assert [(t["name"], t["scope"], t["max_priority"], t["revoked"]) for t in listed] == [
        ("ci-pipeline", "write", 5, False)
    ]
    assert secret not in str(listed)
    with db() as session:
        row = session.scalars(select(ApiToken)).one()
    assert row.token_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(vars(row))
    again = client.post("/api/v1/tokens", json={"name": "ci-pipeline"})
    assert again.status_code == 409


def test_scopes_read_write_admin(client: TestClient) -> None:
    reader = issue(client, "dashboard-viewer", scope="read")
    writer = issue(client, "team-a", scope="write")
    assert client.get("/api/v1/studies", headers=bearer(reader)).status_code == 200
    refused = submit(client, reader)
    assert refused.status_code == 403
    assert "may only read" in refused.json()["detail"]
    assert submit(client, writer).status_code == 201
    for path in ("/api/v1/tokens",):
        assert client.get(path, headers=bearer(writer)).status_code == 403
        assert client.post(path, json={"name": "x"}, headers=bearer(writer)).status_code == 403
    assert client.get("/api/v1/studies", headers=bearer("hps_not-a-token")).status_code == 401


def test_a_write_token_changes_only_its_own_studies(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    alice, bob = issue(client, "alice"), issue(client, "bob")
    study = submit(client, alice).json()["id"]
    with db() as session:
        owner = session.get_one(Study, study).owner_token_id
        assert owner == session.scalars(select(ApiToken.id).where(ApiToken.name == "alice")).one()
    for method, path, body in (
        ("POST", f"/api/v1/studies/{study}/cancel", None),
        ("POST", f"/api/v1/studies/{study}/extend", {"n_trials": 1}),
        ("DELETE", f"/api/v1/studies/{study}", None),
    ):
        refused = client.request(method, path, json=body, headers=bearer(bob))
        assert refused.status_code == 403, (path, refused.text)
        assert "may change only the studies it submitted" in refused.text
    assert client.post(f"/api/v1/studies/{study}/extend", json={"n_trials": 1},
                       headers=bearer(alice)).status_code == 200  # fmt: skip
    assert client.post(f"/api/v1/studies/{study}/cancel", headers=bearer(alice)).status_code == 200
    bobs = submit(client, bob).json()["id"]
    assert client.post(f"/api/v1/studies/{bobs}/cancel").status_code == 200  # the admin's
    assert client.delete(f"/api/v1/studies/{bobs}").status_code == 204


def test_a_tokens_priority_and_queued_trials_are_capped(client: TestClient) -> None:
    limited = issue(client, "students", max_priority=2, max_queued_trials=8)
    high = submit(client, limited, priority=3, budget={"n_trials": 2})
    assert high.status_code == 422
    [issue_] = high.json()["detail"]
    assert issue_["loc"] == ["body", "priority"]
    assert "priority at most 2, got 3" in issue_["msg"]
    assert submit(client, limited, priority=2, budget={"n_trials": 5}).status_code == 201
    over = submit(client, limited, budget={"n_trials": 4})
    assert over.status_code == 422
    [issue_] = over.json()["detail"]
    assert issue_["loc"] == ["body", "budget", "n_trials"]
    assert "at most 8 trials queued; its studies hold 5 not yet run" in issue_["msg"]
    assert submit(client, limited, budget={"n_trials": 3}).status_code == 201
    first = client.get("/api/v1/studies").json()["items"][-1]["id"]
    extended = client.post(
        f"/api/v1/studies/{first}/extend", json={"n_trials": 1}, headers=bearer(limited)
    )
    assert extended.status_code == 422
    assert "at most 8 trials queued" in extended.text
    # the server's own (admin) token has no such limits
    assert client.post("/api/v1/studies", json=valid_spec(priority=100)).status_code == 201


def test_a_revoked_token_is_refused_without_a_restart(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "TOKEN_CACHE_S", 0.0)  # the 5 s lookup cache off
    secret = issue(client, "leaked")
    assert client.get("/api/v1/studies", headers=bearer(secret)).status_code == 200
    revoked = client.delete("/api/v1/tokens/leaked")
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True
    assert client.get("/api/v1/studies", headers=bearer(secret)).status_code == 401
    assert submit(client, secret).status_code == 401  # the write guard asks the same store
    assert client.delete("/api/v1/tokens/never-issued").status_code == 404


def test_limits_beyond_the_columns_are_refused(client: TestClient) -> None:
    """Found by the fuzzer: a limit larger than an INTEGER column was a 500."""
    huge = client.post("/api/v1/tokens", json={"name": "big", "max_queued_trials": 2**70})
    assert huge.status_code == 422
    assert huge.json()["detail"][0]["loc"] == ["body", "max_queued_trials"]


def test_a_write_token_deletes_only_the_data_sets_it_uploaded(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    alice, bob = issue(client, "alice"), issue(client, "bob")
    files = {"file": ("t.csv", make_csv(), "text/csv")}
    uploaded = client.post(
        "/api/v1/datasets", files=files, data={"target": "label"}, headers=bearer(alice)
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()["id"]
    with db() as session:
        owner = session.get_one(Dataset, dataset).owner_token_id
        assert owner == session.scalars(select(ApiToken.id).where(ApiToken.name == "alice")).one()
    refused = client.delete(f"/api/v1/datasets/{dataset}", headers=bearer(bob))
    assert refused.status_code == 403
    assert "may delete only the data sets it uploaded" in refused.text
    with db() as session:
        assert session.get(Dataset, dataset) is not None  # nothing lost
    assert client.delete(f"/api/v1/datasets/{dataset}", headers=bearer(alice)).status_code == 204
    again = client.post("/api/v1/datasets", files=files, data={"target": "label"}).json()["id"]
    assert client.delete(f"/api/v1/datasets/{again}", headers=bearer(bob)).status_code == 403
    assert client.delete(f"/api/v1/datasets/{again}").status_code == 204  # the admin's

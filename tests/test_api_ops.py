"""Operations: the workers list, the health probe (and its 503), Prometheus metrics."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.api import create_app
from service.config import Settings
from service.db.engine import transaction
from service.db.models import Worker, utcnow
from tests.api_fixtures import AUTH, TestClient, make_settings, seed_study, seed_trial

pytest_plugins = ["tests.api_fixtures"]

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
"""Port 1: nothing listens there, so a connection is refused at once (deterministic)."""


def test_workers_list_with_heartbeat_age(client: TestClient, db: sessionmaker[Session]) -> None:
    study_id = seed_study(db, status="running")
    trial_id = seed_trial(db, study_id, 0, state="running", value=None, finished_at=None)
    now = utcnow()
    with transaction(db) as session:
        session.add_all(
            [
                Worker(host="gpu-1", pid=11, device="cuda:0", status="busy",
                       current_trial_id=trial_id, heartbeat_at=now - timedelta(seconds=3)),
                Worker(host="cpu-1", pid=12, device="cpu", status="idle",
                       heartbeat_at=now - timedelta(minutes=10)),
            ]
        )  # fmt: skip
    page = client.get("/api/v1/workers").json()
    assert page["total"] == 2
    busy, idle = page["items"]
    assert (busy["host"], busy["device"], busy["status"], busy["current_trial_id"]) == (
        "gpu-1", "cuda:0", "busy", trial_id,
    )  # fmt: skip
    assert 3 <= busy["heartbeat_age_s"] < 60
    assert idle["current_trial_id"] is None
    assert 600 <= idle["heartbeat_age_s"] < 700


def test_healthz_reports_the_database(client: TestClient) -> None:
    for path in ("/healthz", "/api/v1/healthz"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "database": "ok",
            "migrations": "current",
            "detail": None,
        }


def test_healthz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    settings = make_settings(UNREACHABLE, tmp_path)
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "unavailable",
            "database": "unreachable",
            "migrations": "unknown",
            "detail": None,
        }
        metrics = client.get("/metrics", headers=AUTH)
        assert metrics.status_code == 200  # the scrape itself still answers
        assert "hps_database_up 0.0" in metrics.text


def test_metrics_count_from_the_database_and_time_requests_by_route(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    running = seed_study(db, status="running")
    seed_study(db)
    seed_study(db)
    seed_trial(db, running, 0, duration_s=3.0)
    seed_trial(db, running, 1, duration_s=45.0, state="pruned")
    seed_trial(db, running, 2, state="running", value=None, finished_at=None, duration_s=None)
    client.get(f"/api/v1/studies/{running}")
    client.get("/api/v1/studies/424242")
    client.get("/api/v1/no-such-route")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'hps_studies{status="queued"} 2.0' in text
    assert 'hps_studies{status="running"} 1.0' in text
    assert 'hps_studies{status="failed"} 0.0' in text
    assert 'hps_trials{state="complete"} 1.0' in text
    assert 'hps_trials{state="running"} 1.0' in text
    assert 'hps_trial_duration_seconds_bucket{le="5.0"} 1.0' in text
    assert 'hps_trial_duration_seconds_bucket{le="60.0"} 2.0' in text
    assert "hps_trial_duration_seconds_count 2.0" in text
    assert "hps_trial_duration_seconds_sum 48.0" in text
    for status in ("200", "404"):
        labels = f'method="GET",route="/api/v1/studies/{{study_id}}",status="{status}"'
        assert f"hps_api_request_duration_seconds_count{{{labels}}} 1.0" in text
    assert 'route="unmatched"' in text
    assert 'route="/api/v1/studies/424242"' not in text  # raw paths never become labels
    assert client.get("/api/v1/metrics").text.startswith("# HELP")


def test_each_app_has_its_own_metrics(migrated_database_url: str, tmp_path: Path) -> None:
    """Many apps in one process (as in these tests) never share or clash on a registry."""
    first = TestClient(create_app(make_settings(migrated_database_url, tmp_path)), headers=AUTH)
    second = TestClient(create_app(make_settings(migrated_database_url, tmp_path)), headers=AUTH)
    with first, second:
        first.get("/api/v1/studies")
        assert '/api/v1/studies"' in first.get("/metrics").text
        assert '/api/v1/studies"' not in second.get("/metrics").text


def test_a_500_carries_a_request_id_that_the_log_has_with_the_traceback(
    api_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from service.api.routes import health

    def broken(_session: object) -> None:
        raise RuntimeError("a bug in a use case")

    monkeypatch.setattr(health, "check_health", broken)
    app = create_app(api_settings)
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        response = client.get("/healthz")
        quoted = client.get("/healthz", headers={"X-Request-ID": "ci-run-42"})
        forged = client.get("/healthz", headers={"X-Request-ID": "x\nERROR fake line"})
    assert response.status_code == 500
    body = response.json()
    rid = body["request_id"]
    assert response.headers["X-Request-ID"] == rid
    assert rid in body["detail"]
    assert "Traceback" not in response.text
    assert "a bug in a use case" not in response.text
    assert f"request {rid}: GET /healthz failed" in caplog.text
    assert "RuntimeError: a bug in a use case" in caplog.text  # the traceback, in the log
    assert quoted.json()["request_id"] == "ci-run-42"
    assert forged.json()["request_id"] != "x\nERROR fake line"

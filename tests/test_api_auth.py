"""Bearer tokens: configured or generated; reads open only with public_read; probes open."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from service.api import create_app
from service.api.auth import TOKEN_FILE
from tests.api_fixtures import AUTH, TOKEN, TestClient, make_settings, valid_spec

pytest_plugins = ["tests.api_fixtures"]

STUDIES = "/api/v1/studies"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"},
     bearer(TOKEN + "x"), {"Authorization": "Bearer tökén".encode("latin-1")}],
    ids=["missing", "wrong", "no-scheme", "basic", "longer", "non-ascii"],
)  # fmt: skip
def test_a_missing_or_wrong_token_is_401_on_writes_and_reads(
    anonymous: TestClient, headers: dict[str, str | bytes]
) -> None:
    for method, path in [
        ("POST", STUDIES),
        ("GET", STUDIES),
        ("GET", "/api/v1/datasets"),
        ("GET", "/api/v1/workers"),
        ("GET", "/api/v1/metrics"),
        ("DELETE", f"{STUDIES}/1"),
    ]:
        response = anonymous.request(method, path, headers=headers, json=valid_spec())
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"]


def test_any_configured_token_works(migrated_database_url: str, tmp_path: Path) -> None:
    settings = make_settings(migrated_database_url, tmp_path, api_token=f" one , {TOKEN},")
    with TestClient(create_app(settings)) as client:
        assert client.get(STUDIES, headers=bearer("one")).status_code == 200
        assert client.get(STUDIES, headers=AUTH).status_code == 200
        assert client.get(STUDIES, headers=bearer("")).status_code == 401


def test_public_read_opens_reads_but_not_writes(migrated_database_url: str, tmp_path: Path) -> None:
    settings = make_settings(migrated_database_url, tmp_path, public_read=True)
    with TestClient(create_app(settings)) as client:
        assert client.get(STUDIES).status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.post(STUDIES, json=valid_spec()).status_code == 401
        assert client.post(STUDIES, json=valid_spec(), headers=AUTH).status_code == 201
        assert client.post(f"{STUDIES}/1/cancel").status_code == 401
        assert client.delete(f"{STUDIES}/1").status_code == 401
        upload = client.post("/api/v1/datasets", files={"file": ("x.csv", b"a,b\n")})
        assert upload.status_code == 401


def test_public_read_keeps_weights_workers_and_importances_behind_the_token(
    migrated_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(migrated_database_url, tmp_path, public_read=True, host="0.0.0.0")
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
        created = client.post(STUDIES, json=valid_spec(), headers=AUTH).json()
        private = (
            f"{STUDIES}/{created['id']}/trials/0/checkpoint",
            "/api/v1/workers",
            f"{STUDIES}/{created['id']}/importances",
        )
        for path in private:
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=AUTH).status_code != 401, path
        assert client.get(f"{STUDIES}/{created['id']}").status_code == 200  # reads stay open
    assert "HPS_PUBLIC_READ is on and the server listens on 0.0.0.0" in caplog.text


def test_responses_carry_the_browser_security_headers(anonymous: TestClient) -> None:
    page = anonymous.get("/")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"  # the first URL carries ?token=
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "Content-Security-Policy" not in anonymous.get("/docs").headers  # CDN-hosted UI


def test_probes_and_docs_need_no_token(anonymous: TestClient) -> None:
    for path in ("/healthz", "/api/v1/healthz", "/docs", "/openapi.json"):
        assert anonymous.get(path).status_code == 200, path
    schema = anonymous.get("/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_without_a_configured_token_one_is_generated_saved_and_reused(
    migrated_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(migrated_database_url, tmp_path / "data", api_token=None)
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
        token_file = settings.data_dir / TOKEN_FILE
        token = token_file.read_text().strip()
        assert len(token) >= 40
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert str(token_file) in caplog.text  # the log says where it is ...
        assert token not in caplog.text  # ... never the token itself
        assert client.get(STUDIES).status_code == 401
        assert client.get(STUDIES, headers=bearer(token)).status_code == 200
    assert [p.name for p in settings.data_dir.iterdir()] == [TOKEN_FILE]  # no staging left
    with TestClient(create_app(settings)) as again:  # the next start reuses it
        assert token_file.read_text().strip() == token
        assert again.post(STUDIES, json=valid_spec(), headers=bearer(token)).status_code == 201


def test_a_token_file_readable_by_others_is_tightened(
    migrated_database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(migrated_database_url, tmp_path, api_token=None)
    token_file = tmp_path / TOKEN_FILE
    token_file.write_text("from-an-operator\n")
    token_file.chmod(0o644)
    with TestClient(create_app(settings)) as client:
        assert client.get(STUDIES, headers=bearer("from-an-operator")).status_code == 200
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_embedded_sqlite_is_migrated_at_startup(tmp_path: Path) -> None:
    """No database URL: the app creates and migrates `<data_dir>/hpsearch.db` itself."""
    settings = make_settings(None, tmp_path / "fresh")
    assert settings.is_embedded_sqlite
    with TestClient(create_app(settings), headers=AUTH) as client:
        assert client.post(STUDIES, json=valid_spec()).status_code == 201
        assert client.get(STUDIES).json()["total"] == 1
    assert (tmp_path / "fresh" / "hpsearch.db").is_file()


def test_tokens_in_logged_urls_are_redacted() -> None:
    from service.api.log_scrub import REDACTED, ScrubTokens

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/studies/3?token=s3cr3t-T0ken&tab=trials", "1.1", 200),
        None,
    )
    assert ScrubTokens().filter(record)
    message = record.getMessage()
    assert "s3cr3t" not in message
    assert f"/studies/3?token={REDACTED}&tab=trials" in message


def test_the_access_log_of_a_running_server_has_no_token(
    migrated_database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(migrated_database_url, tmp_path / "data")
    with TestClient(create_app(settings)):
        pass  # create_app installs the filter on uvicorn's loggers
    access = logging.getLogger("uvicorn.access")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "c", "GET", f"/?token={TOKEN}", "1.1", 200)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert lines == ['c - "GET /?token=[redacted] HTTP/1.1" 200']


def test_a_loopback_server_answers_only_loopback_host_names(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 sends
    `Host: evil.example`; a server bound to loopback refuses it (as MLflow's allowed hosts)."""
    settings = make_settings(migrated_database_url, tmp_path / "data", public_read=True)
    with TestClient(create_app(settings)) as client:
        for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
        refused = client.get("/api/v1/studies", headers={"Host": "evil.example"})
        assert refused.status_code == 400
        assert refused.text == "Invalid host header"
        assert client.get("/", headers={"Host": "evil.example:8000"}).status_code == 400


def test_allowed_hosts_name_the_servers_names(migrated_database_url: str, tmp_path: Path) -> None:
    pinned = make_settings(
        migrated_database_url, tmp_path / "data", host="0.0.0.0", allowed_hosts="hps.lab, *.corp"
    )
    assert pinned.host_names == ["hps.lab", "*.corp"]
    with TestClient(create_app(pinned), base_url="http://hps.lab", headers=AUTH) as client:
        assert client.get("/api/v1/studies").status_code == 200
        sub = client.get("/api/v1/studies", headers={"Host": "gpu.corp"})
        assert sub.status_code == 200
        assert client.get("/api/v1/studies", headers={"Host": "other.lab"}).status_code == 400
    # bound to every interface without a list: reached by names the server cannot know
    assert make_settings(None, tmp_path, host="0.0.0.0").host_names == ["*"]
    assert make_settings(None, tmp_path).host_names == ["localhost", "127.0.0.1", "[::1]"]

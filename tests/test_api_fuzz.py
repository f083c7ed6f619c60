"""schemathesis against the app's own OpenAPI schema: no request it can generate gets a 5xx.

Every operation is called with examples generated from the schema (valid and invalid bodies,
odd query values, unknown ids), authenticated, against the real server (uvicorn on loopback)
on a fresh SQLite database. Over 1,000 requests in all; the last test checks that count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from service.api.app import create_app
from service.config import Settings
from service.stack import BackgroundServer
from tests.api_fixtures import free_port

TOKEN = "fuzz-token"
REQUESTS: list[int] = []

# Building the app touches no database: the schema is known before any server runs.
schema = schemathesis.openapi.from_dict(create_app(Settings(api_token=TOKEN)).openapi())


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server in a thread, so its lifespan (migrations, engine) runs once."""
    port = free_port()
    data_dir = tmp_path_factory.mktemp("fuzz")
    server = BackgroundServer(Settings(data_dir=data_dir, api_token=TOKEN, port=port))
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@schema.parametrize()
@settings(max_examples=90, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_gets_a_server_error(case: schemathesis.Case[Any], base_url: str) -> None:
    response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"})
    REQUESTS.append(response.status_code)
    assert response.status_code < 500, (
        case.method,
        case.path,
        case.path_parameters,
        case.query,
        case.body,
        response.text,
    )


def test_more_than_a_thousand_requests_were_made() -> None:
    assert len(REQUESTS) >= 1000, len(REQUESTS)

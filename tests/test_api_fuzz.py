"""schemathesis against the app's own OpenAPI schema: no request it can generate gets a 5xx.

Every operation is called with examples generated from the schema (valid and invalid bodies,
odd query values, unknown ids), authenticated, against the real server (uvicorn on loopback)
on a fresh SQLite database; then statefully, in sequences that follow the links schemathesis
infers between operations (a study created, then read, reported, extended, cancelled,
deleted; a dataset uploaded, then listed and deleted), each sequence from an empty database so
that Hypothesis can replay it. Over 2,000 requests in all; the last test checks the counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine, text

from service.api.app import create_app
from service.config import Settings
from service.stack import BackgroundServer
from tests.api_fixtures import free_port

TOKEN = "fuzz-token"
REQUESTS: list[int] = []
LINKED: list[int] = []
FUZZ_SETTINGS = settings(
    deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)

# Building the app touches no database: the schema is known before any server runs.
schema = schemathesis.openapi.from_dict(create_app(Settings(api_token=TOKEN)).openapi())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The real server in a thread, so its lifespan (migrations, engine) runs once."""
    data_dir = tmp_path_factory.mktemp("fuzz")
    server_settings = Settings(data_dir=data_dir, api_token=TOKEN, port=free_port())
    server = BackgroundServer(server_settings)
    server.start()
    try:
        yield server_settings
    finally:
        server.stop()


@pytest.fixture(scope="module")
def base_url(served: Settings) -> str:
    return f"http://127.0.0.1:{served.port}"


@schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=90)
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


def test_linked_calls_get_no_server_error(served: Settings, base_url: str) -> None:
    engine = create_engine(served.effective_database_url)

    class LinkedCalls(schema.as_state_machine()):  # type: ignore[misc]  # built at run time
        def setup(self) -> None:
            with engine.begin() as connection:  # every sequence from an empty server
                for table in (
                    "hps_trial_epochs",
                    "hps_trials",
                    "hps_studies",
                    "hps_datasets",
                    "hps_api_tokens",
                ):
                    connection.execute(text(f"DELETE FROM {table}"))

        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"base_url": base_url, "headers": {"Authorization": f"Bearer {TOKEN}"}}

        def validate_response(
            self, response: Any, case: schemathesis.Case[Any], **kwargs: Any
        ) -> None:
            LINKED.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.text)

    try:
        LinkedCalls.run(settings=settings(FUZZ_SETTINGS, max_examples=120, stateful_step_count=10))
    finally:
        engine.dispose()
    assert 201 in LINKED  # studies and datasets were created, so the linked calls found them


def test_more_than_two_thousand_requests_were_made() -> None:
    assert len(REQUESTS) >= 1000, len(REQUESTS)
    assert len(LINKED) >= 1000, len(LINKED)
    assert len(REQUESTS) + len(LINKED) >= 2000

"""A write is refused before its body is read: no token, 401 at once; a body over the limit,
413 (declared, or counted while it streams). Driven through ASGI directly to see the reads."""

from __future__ import annotations

import json

import anyio
from starlette.types import Message, Scope

from service.api.write_guard import MAX_BODY_BYTES
from tests.api_fixtures import AUTH, TestClient, valid_spec

pytest_plugins = ["tests.api_fixtures"]

STUDIES = "/api/v1/studies"


def call(
    client: TestClient, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[list[int], int, bytes]:
    """(statuses sent, body chunks the app pulled, response body)."""
    pulled = 0
    statuses: list[int] = []
    body = b""

    async def receive() -> Message:
        nonlocal pulled
        if pulled == len(chunks):
            return {"type": "http.disconnect"}
        pulled += 1
        return {
            "type": "http.request",
            "body": chunks[pulled - 1],
            "more_body": pulled < len(chunks),
        }

    async def send(message: Message) -> None:
        nonlocal body
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": STUDIES, "raw_path": STUDIES.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("test", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    anyio.run(client.app, scope, receive, send)
    return statuses, pulled, body


def test_no_token_is_a_401_before_any_of_the_body_is_read(client: TestClient) -> None:
    chunks = [b" " * 1024 * 1024] * 48  # 48 MB that must never be read
    lying = [(b"content-type", b"application/json"), (b"content-length", b"2147483648")]
    for headers in (lying, [*lying, (b"authorization", b"Bearer wrong")]):
        statuses, pulled, body = call(client, chunks, headers)
        assert statuses == [401]
        assert pulled == 0
        assert "bearer token" in json.loads(body)["detail"]


def test_an_oversized_body_is_a_413_declared_or_streamed(client: TestClient) -> None:
    auth = (b"authorization", AUTH["Authorization"].encode())
    declared = [auth, (b"content-type", b"application/json"), (b"content-length", b"2000000")]
    statuses, pulled, _ = call(client, [b"{}"], declared)
    assert (statuses, pulled) == ([413], 0)
    chunks = [b" " * 65536] * 100  # 6.5 MB without a Content-Length
    streamed = [auth, (b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    statuses, pulled, body = call(client, chunks, streamed)
    assert statuses == [413]
    assert pulled <= MAX_BODY_BYTES // 65536 + 1
    assert f"limit of {MAX_BODY_BYTES} bytes" in json.loads(body)["detail"]


def test_a_normal_write_still_goes_through(client: TestClient) -> None:
    body = json.dumps(valid_spec()).encode()
    headers = [
        (b"authorization", AUTH["Authorization"].encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    statuses, pulled, _ = call(client, [body], headers)
    assert statuses == [201]
    assert pulled == 1

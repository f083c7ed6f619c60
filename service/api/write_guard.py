"""Writes are checked before their body is read: the token first (401), then the size (413).

FastAPI reads a request's body before it runs the route's dependencies, so without this a
client with no token could make the server read (and parse) an unbounded body before it got
its 401. Uploads keep their own, larger budget (`service.api.uploads`)."""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.auth import token_matches
from service.api.paths import API_PREFIX

MAX_BODY_BYTES = 1024 * 1024
"""A JSON or text body (a study spec, a pasted spec); uploads have `max_upload_bytes`."""

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UPLOADS = (f"{API_PREFIX}/datasets",)


class WriteGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _WRITES
            or not scope["path"].startswith(API_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        headers = {key.lower(): value for key, value in scope["headers"]}
        authorization = headers.get(b"authorization", b"")
        if not await self._authorized(scope, authorization):
            # the same answers as the route's own dependency (service.api.deps)
            detail = (
                "missing or invalid bearer token" if authorization else "a bearer token is required"
            )
            await _reply(send, 401, detail, bearer=True)
            return
        if scope["path"] in _UPLOADS:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _reply(send, 413, _too_large())
            return
        received = 0
        replied = False

        async def bounded() -> Message:
            # Past the limit: answer 413 here and tell the app the client left (raising would
            # reach FastAPI's body parser, which turns any error into a 400).
            nonlocal received, replied
            if replied:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    replied = True
                    await _reply(send, 413, _too_large())
                    return {"type": "http.disconnect"}
            return message

        async def send_unless_replied(message: Message) -> None:
            if not replied:
                await send(message)

        await self.app(scope, bounded, send_unless_replied)

    @staticmethod
    async def _authorized(scope: Scope, header: bytes) -> bool:
        """A server token, or an issued one (its scope is the route's dependency's to check)."""
        runtime = getattr(scope["app"].state, "runtime", None)
        if runtime is None:
            return True  # not started: the route's own dependency answers
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        if token_matches(token.strip(), runtime.api_tokens):
            return True
        return await run_in_threadpool(runtime.issued_token, token.strip()) is not None


def _too_large() -> str:
    return f"the request body is larger than this server's limit of {MAX_BODY_BYTES} bytes"


async def _reply(send: Send, status: int, detail: str, *, bearer: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if bearer:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

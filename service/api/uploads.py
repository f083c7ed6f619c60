"""A multipart upload read with a byte budget enforced while it streams in.

Starlette's parser spools file parts to temporary files (memory up to 1 MiB, then disk); the
budget stops reading (413) as soon as the body exceeds the file limit plus room for the form's
other fields, so neither memory nor disk ever takes an unbounded body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.types import Message

from service.studies import TooLargeError

FORM_OVERHEAD_BYTES = 64 * 1024
"""Multipart boundaries, part headers and the small text fields besides the file."""


@asynccontextmanager
async def bounded_form(
    request: Request, max_file_bytes: int, *, max_fields: int = 8
) -> AsyncIterator[FormData]:
    """The request's multipart form, refused with `TooLargeError` past the budget; its
    spooled files are closed on exit."""
    budget = max_file_bytes + FORM_OVERHEAD_BYTES
    too_large = TooLargeError(
        f"the upload is larger than this server's limit of {max_file_bytes} bytes"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > budget:
        raise too_large
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > budget:
                raise too_large
        return message

    bounded = Request(request.scope, receive)
    form = await bounded.form(max_files=1, max_fields=max_fields)
    try:
        yield form
    finally:
        await form.close()

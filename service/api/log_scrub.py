"""Tokens never reach a log: `?token=...` in a logged URL becomes `?token=[redacted]`.

The dashboard's URL carries the token once (the page stores it and strips it from the
address bar), so uvicorn's access log would write it verbatim; Jupyter scrubs the same way.
"""

from __future__ import annotations

import logging
import re

_TOKEN_PARAMETER = re.compile(r"([?&](?:token|access_token|api_token)=)[^&#\s\"]*", re.IGNORECASE)
REDACTED = "[redacted]"


def scrub(text: str) -> str:
    return _TOKEN_PARAMETER.sub(rf"\g<1>{REDACTED}", text)


class ScrubTokens(logging.Filter):
    """Redacts token query parameters in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in record.args)
        return True


def scrub_access_logs() -> None:
    """Install the filter on uvicorn's access and error loggers (once per process)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        target = logging.getLogger(name)
        if not any(isinstance(f, ScrubTokens) for f in target.filters):
            target.addFilter(ScrubTokens())

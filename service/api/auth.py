"""Bearer tokens: configured (`HPS_API_TOKEN`, comma-separated), or generated on first start.

With no token configured the server is never open: like Jupyter, it generates one, keeps it in
`<data_dir>/api-token` (mode 0600, reused by the next start) and logs it.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from service.config import Settings

logger = logging.getLogger(__name__)

TOKEN_FILE = "api-token"


def resolve_api_tokens(settings: Settings) -> tuple[bytes, ...]:
    """The tokens this server accepts (never empty)."""
    configured = [t.strip() for t in (settings.api_token or "").split(",") if t.strip()]
    if configured:
        return tuple(token.encode() for token in configured)
    return (_stored_token(settings.data_dir / TOKEN_FILE).encode(),)


def token_matches(given: str, tokens: tuple[bytes, ...]) -> bool:
    """Constant-time comparison against every accepted token (no early exit)."""
    candidate = given.encode()
    matched = False
    for token in tokens:
        matched |= secrets.compare_digest(candidate, token)
    return matched


def _stored_token(path: Path) -> str:
    token = _read_token(path)
    if token is not None:
        logger.info("API token read from %s (HPS_API_TOKEN is not set)", path)
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    staged = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(token + "\n")
        try:
            os.link(staged, path)  # atomic, and never replaces a token another start wrote
        except FileExistsError:
            existing = _read_token(path)
            if existing is None:
                raise
            return existing
    finally:
        staged.unlink(missing_ok=True)
    # The log names the file, never the token: logs are shipped and kept. The one who started
    # the server sees the token on the terminal (as Jupyter prints its URL), once.
    logger.warning(
        "No API token configured (HPS_API_TOKEN); generated one and saved it to %s (mode 0600)",
        path,
    )
    if sys.stderr.isatty():
        print(
            f"hpsearch API token: {token}  (send it as 'Authorization: Bearer <token>')",
            file=sys.stderr,
        )
    return token


def _read_token(path: Path) -> str | None:
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    if not token:
        raise RuntimeError(f"the API token file {path} is empty; delete it or set HPS_API_TOKEN")
    if path.stat().st_mode & 0o077:
        logger.warning("API token file %s was readable by others; restricting it to 0600", path)
        path.chmod(0o600)
    return token

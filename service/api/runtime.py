"""What an app holds while it runs: engine, sessions, accepted tokens. Built at startup."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.api.auth import resolve_api_tokens
from service.artifacts import artifact_store
from service.config import LOOPBACK_HOSTS, Settings
from service.db.engine import create_db_engine, make_session_factory
from service.db.schema import require_current_schema
from service.metrics import DatabaseCollector, Metrics
from service.process import freeze_startup_objects
from service.studies.tokens import Principal, digest, principal_of

logger = logging.getLogger(__name__)

DB_POOL_SIZE = 16
"""Connections kept open (as many again may be opened for bursts). Route handlers run in a
thread pool of 40, and each holds a connection only for its use case's transaction; a pool
smaller than the usual concurrency would open and close a PostgreSQL connection (a new server
process) on every request beyond it."""


TOKEN_CACHE_S = 5.0
"""How long an issued token's lookup is kept: a revocation takes effect within this."""


@dataclass(frozen=True)
class Runtime:
    engine: Engine
    session_factory: sessionmaker[Session]
    api_tokens: tuple[bytes, ...]
    _issued: dict[str, tuple[float, Principal | None]] = field(default_factory=dict)
    _issued_lock: threading.Lock = field(default_factory=threading.Lock)

    def issued_token(self, secret: str) -> Principal | None:
        """The issued token `secret` is (None: none, or revoked), looked up at most every
        `TOKEN_CACHE_S` per token (a request thread's database read)."""
        key = digest(secret)
        now = time.monotonic()
        with self._issued_lock:
            kept = self._issued.get(key)
        if kept is not None and now - kept[0] < TOKEN_CACHE_S:
            return kept[1]
        with self.session_factory() as session:
            principal = principal_of(session, secret)
        with self._issued_lock:
            if len(self._issued) > 10_000:  # random tokens must not grow it without bound
                self._issued.clear()
            self._issued[key] = (now, principal)
        return principal


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Migrate an embedded SQLite database, open the engine, resolve tokens; undo on stop."""
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    if settings.is_embedded_sqlite or settings.migrate_on_start:
        _migrate(settings.effective_database_url)
    require_current_schema(settings.effective_database_url)  # SchemaError: startup stops
    artifact_store(settings).check()  # ArtifactStoreError: startup stops, saying why
    if settings.public_read and settings.host not in LOOPBACK_HOSTS:
        logger.warning(
            "HPS_PUBLIC_READ is on and the server listens on %s: anyone who can reach it reads "
            "every study (checkpoints, workers and importances still need the token); put it "
            "behind TLS and a proxy, or bind 127.0.0.1",
            settings.host,
        )
    engine = create_db_engine(
        settings.effective_database_url,
        pool_size=DB_POOL_SIZE,
        prepared_statements=settings.db_prepared_statements,
    )
    runtime = Runtime(engine, make_session_factory(engine), resolve_api_tokens(settings))
    collector = DatabaseCollector(runtime.session_factory)
    metrics.registry.register(collector)
    app.state.runtime = runtime
    freeze_startup_objects()
    try:
        yield
    finally:
        metrics.registry.unregister(collector)
        del app.state.runtime
        engine.dispose()


def _migrate(url: str) -> None:
    """Bring the embedded database (or, with `hpsearch serve --migrate`, any) to the current
    schema; a server database is otherwise migrated by its operator (`hpsearch db upgrade`)."""
    from service.db.migrate import upgrade

    logger.info("applying migrations to %s", url)
    upgrade(url)

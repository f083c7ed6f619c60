"""Persistence: typed ORM models (`hps_` tables), engines and sessions, Alembic migrations.

Migrations live in `service.db.migrate` (imported on demand: it loads Alembic).
"""

from service.db.engine import create_db_engine, make_session_factory, transaction
from service.db.models import TABLE_PREFIX, Base

__all__ = ["TABLE_PREFIX", "Base", "create_db_engine", "make_session_factory", "transaction"]

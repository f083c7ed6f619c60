"""Alembic environment for hpsearch's own tables (all prefixed `hps_`).

Configured by `service.db.migrate` (the URL arrives as `config.attributes["url"]`) or by the plain
`alembic` CLI through pyproject.toml's `[tool.alembic]` (URL from `-x url=...`, else the
settings' effective database URL). Logging is left as the application configured it.
"""

from __future__ import annotations

from alembic import context

from service.config import get_settings
from service.db import Base
from service.db.migrate import VERSION_TABLE, include_name, migration_engine, render_item

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_alembic_option("sqlalchemy.url")
    return str(url or get_settings().effective_database_url)


OPTIONS = {
    "target_metadata": Base.metadata,
    "version_table": VERSION_TABLE,
    "include_name": include_name,
    "render_item": render_item,
    "compare_type": True,
}


def run_migrations_offline() -> None:
    """`--sql`: write the SQL instead of running it."""
    url = _url()
    context.configure(
        url=url,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        **OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = migration_engine(_url())
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                render_as_batch=connection.dialect.name == "sqlite",
                **OPTIONS,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

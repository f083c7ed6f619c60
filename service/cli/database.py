"""`hpsearch db`: Alembic migrations of hpsearch's own (hps_) tables."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli._common import console, error_console

app = typer.Typer(help="The database schema: Alembic migrations of hpsearch's hps_ tables.")

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="SQLAlchemy URL; default: HPS_DATABASE_URL, else the SQLite file in data_dir"
    ),
]


class _DatabaseErrors:
    """Any failure to reach or migrate the database: one red line on stderr and exit code 1."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        from alembic.util import CommandError
        from pydantic import ValidationError
        from rich.markup import escape
        from sqlalchemy.exc import SQLAlchemyError

        from service.db.migrate import MigrationError

        expected = (
            CommandError,
            SQLAlchemyError,
            MigrationError,
            ValidationError,
            ImportError,
            OSError,
        )
        if not isinstance(error, expected):
            return
        lines = str(error).strip().splitlines() or [type(error).__name__]
        error_console.print(
            f"[red]database error:[/red] {escape(lines[0])}", soft_wrap=True, highlight=False
        )
        raise typer.Exit(1) from None


def _target(url: str | None) -> tuple[str, str]:
    """The URL to use and how to show it (password hidden)."""
    from sqlalchemy.engine import make_url

    from service.config import get_settings

    target = url or get_settings().effective_database_url
    return target, make_url(target).render_as_string(hide_password=True)


@app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    url: UrlOption = None,
) -> None:
    """Bring the database's hps_ tables up to a revision (default: the newest)."""
    from service.db import migrate

    with _DatabaseErrors():
        target, shown = _target(url)
        before = migrate.current(target)
        migrate.upgrade(target, revision)
        after = migrate.current(target)
    verb = "already at" if before == after else f"upgraded from {before or 'base'} to"
    console.print(f"{shown}: {verb} {after or 'base'}", soft_wrap=True, highlight=False)


@app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help='target revision; "base" drops every hps_ table')],
    url: UrlOption = None,
) -> None:
    """Take the database's hps_ tables down to a revision (Optuna's tables are left alone)."""
    from service.db import migrate

    with _DatabaseErrors():
        target, shown = _target(url)
        before = migrate.current(target)
        migrate.downgrade(target, revision)
        after = migrate.current(target)
    verb = "already at" if before == after else f"downgraded from {before or 'base'} to"
    console.print(f"{shown}: {verb} {after or 'base'}", soft_wrap=True, highlight=False)


@app.command("current")
def db_current(url: UrlOption = None) -> None:
    """Show the database's revision and whether it is the newest."""
    from service.db import migrate

    with _DatabaseErrors():
        target, shown = _target(url)
        revision, newest = migrate.current(target), migrate.head()
    if revision is None:
        state = "base (no hps_ tables yet: run `hpsearch db upgrade`)"
    elif revision == newest:
        state = f"{revision} (head)"
    else:
        state = f"{revision} (head is {newest}: run `hpsearch db upgrade`)"
    console.print(f"{shown}: {state}", soft_wrap=True, highlight=False)


@app.command("wait")
def db_wait(
    url: UrlOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="seconds before giving up (exit 1)")
    ] = 600.0,
    poll: Annotated[float, typer.Option("--poll", min=0.1, help="seconds between checks")] = 2.0,
) -> None:
    """Wait until the database's hps_ tables are at this code's newest revision: what a
    server or worker waits for while a migration runs (a Kubernetes initContainer). An
    unreachable database counts as not yet."""
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from service.db import migrate

    target, shown = _target(url)
    newest = migrate.head()
    deadline = time.monotonic() + timeout
    last = "not checked yet"
    while True:
        try:
            revision = migrate.current(target)
            last = revision or "base"
            if revision == newest:
                console.print(f"{shown}: {revision} (head)", soft_wrap=True, highlight=False)
                return
        except SQLAlchemyError as error:
            last = f"unreachable ({str(error).strip().splitlines()[0]})"
        if time.monotonic() >= deadline:
            error_console.print(
                f"error: {shown} is at {last} after {timeout:g} s; expected {newest} "
                "(run `hpsearch db upgrade`)",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(1)
        time.sleep(poll)

"""The stack: `serve`, `worker`, `up` and `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli._common import error_console

app = typer.Typer()

DeviceOption = Annotated[str, typer.Option(help="auto (a GPU when present), cpu, cuda or cuda:N")]
HostOption = Annotated[str | None, typer.Option(help="bind address (default HPS_HOST, 127.0.0.1)")]
PortOption = Annotated[int | None, typer.Option(help="port (default HPS_PORT, 8000)")]


def _settings(host: str | None = None, port: int | None = None) -> Any:
    from service.config import get_settings

    settings = get_settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    return settings.model_copy(update=overrides) if overrides else settings


@app.command()
def serve(
    host: HostOption = None,
    port: PortOption = None,
    workers: Annotated[
        int, typer.Option(min=1, help="server processes (one core each; reads scale with them)")
    ] = 1,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="bring the database to this code's schema first")
    ] = False,
) -> None:
    """Run the REST API (and dashboard) server."""
    import uvicorn

    from service.api.app import create_app
    from service.artifacts import ArtifactStoreError, artifact_store
    from service.db.schema import SchemaError, require_current_schema
    from service.stack import prepare

    settings = _settings(host, port)
    if migrate:
        from service.db.migrate import upgrade

        upgrade(settings.effective_database_url)
    elif not settings.is_embedded_sqlite:  # the embedded database is migrated at start
        try:
            require_current_schema(settings.effective_database_url)
        except SchemaError as error:
            error_console.print(f"[red]hpsearch serve:[/red] {error}", highlight=False)
            raise typer.Exit(2) from None
    try:
        artifact_store(settings).check()
    except ArtifactStoreError as error:
        error_console.print(f"[red]hpsearch serve:[/red] {error}", highlight=False)
        raise typer.Exit(2) from None
    if workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
        return
    # Several processes import the app by name and read their settings from HPS_*; the
    # migration and a generated token happen once, here, before any of them starts.
    prepare(settings)
    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
    )


@app.command()
def worker(
    device: DeviceOption = "auto",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (1 per core)")] = None,
    trials_per_device: Annotated[
        int,
        typer.Option(
            min=1,
            help="processes per device (small models keep a GPU busy); --device cuda gives "
            "every visible GPU this many",
        ),
    ] = 1,
    exit_when_idle: Annotated[bool, typer.Option(help="stop when no work is left")] = False,
    pack_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="train up to this many trials of a study as one fused model where that pays "
            "(small built-in MLPs, a study with max_parallel_trials > 1); 1: never",
        ),
    ] = 8,
) -> None:
    """Run a worker: claim trials of queued studies and train them, until Ctrl-C/SIGTERM."""
    from service.worker.__main__ import main

    argv = ["--device", device, "--trials-per-device", str(trials_per_device)]
    argv += ["--pack-size", str(pack_size)]
    argv += ["--threads", str(threads)] if threads else []
    raise typer.Exit(main(argv + (["--exit-when-idle"] if exit_when_idle else [])))


@app.command()
def up(
    workers: Annotated[int, typer.Option(min=0, help="embedded worker processes")] = 1,
    device: DeviceOption = "auto",
    threads: Annotated[int | None, typer.Option(help="torch threads per worker")] = 1,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Server + embedded workers on the embedded default (SQLite under HPS_DATA_DIR)."""
    from service.stack import run_up

    raise typer.Exit(run_up(_settings(host, port), workers, device, threads))


@app.command()
def demo(
    spec: Annotated[Path, typer.Option(help="the study to run")] = Path(
        "examples/digits-techniques.json"
    ),
    workers: Annotated[int, typer.Option(min=1, help="embedded worker processes")] = 2,
    device: DeviceOption = "auto",
    exit: Annotated[bool, typer.Option("--exit", help="stop when the study is done")] = False,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """`up`, submit the example study, show its progress and leaderboard, keep serving."""
    from service.stack import run_demo

    raise typer.Exit(run_demo(_settings(host, port), spec, workers, device, exit))

"""The `hpsearch` command line (typer + rich)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

# Lightning 2.6.6 calls torch 2.13's deprecated pytree API on every fit; users can do nothing
# about it, so the CLI does not show it (tests still see every other warning as an error).
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
)

app = typer.Typer(help="Hyperparameter search for neural-network training techniques.")
console = Console()


class _ProgressReporter:
    """A trainer Reporter that moves a rich progress bar; it never prunes."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress = progress
        self.task = task

    def report(self, epoch: int, value: float) -> None:
        self.progress.update(self.task, completed=epoch, description=f"val_loss {value:.4f}")

    def should_prune(self) -> bool:
        return False


def _load_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise typer.BadParameter(f"cannot read {path}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise typer.BadParameter(f"{path} is not valid JSON/YAML: {error}") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} must hold a JSON/YAML object")
    return data


def _train(config_data: dict[str, Any], checkpoint_dir: Path, device: str) -> None:
    from pydantic import ValidationError

    from trainer import DatasetError, TrialConfig, run_trial

    try:
        config = TrialConfig.from_dict(config_data)
    except ValidationError as error:
        console.print(f"[red]invalid trial config:[/red]\n{error}")
        raise typer.Exit(2) from None
    from service.stack import counting_progress

    with counting_progress("epoch") as progress:
        task = progress.add_task("", total=config.max_epochs)
        try:
            result = run_trial(
                config, _ProgressReporter(progress, task), checkpoint_dir, device=device
            )
        except DatasetError as error:
            console.print(f"[red]dataset error:[/red] {error}")
            raise typer.Exit(2) from None
    table = Table(title=f"trial: {result.status}", show_header=True)
    for column in ("split", "loss", "accuracy", "error"):
        table.add_column(column, justify="right")
    for name, metrics in (("train", result.train), ("val", result.val), ("test", result.test)):
        if metrics is not None:
            table.add_row(
                name, f"{metrics.loss:.4f}", f"{metrics.accuracy:.2%}", f"{metrics.error:.2%}"
            )
    console.print(table)
    console.print(
        f"epochs run: {result.epochs_run} (best epoch {result.best_epoch}, "
        f"stopped early: {result.stopped_early}) on {result.device} in "
        f"{result.wall_time_s:.1f} s"
    )
    if result.diagnosis is not None:
        console.print(
            f"diagnosis: [bold]{result.diagnosis.label}[/bold]: {result.diagnosis.explanation}"
        )
    if result.message:
        console.print(result.message)
    console.print(f"best checkpoint: {result.best_checkpoint}")
    if result.status == "diverged":
        raise typer.Exit(1)


@app.command("run-trial")
def run_trial_command(
    config: Annotated[Path, typer.Argument(help="a TrialConfig as JSON or YAML")],
    checkpoint_dir: Annotated[Path, typer.Option(help="where checkpoints go")] = Path(
        "hpsearch-data/trials/manual"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
) -> None:
    """Train one trial from a config file and print its metrics and diagnosis."""
    _train(_load_document(config), checkpoint_dir, device)


@app.command()
def params() -> None:
    """List the parameter names a study's search_space and fixed values can use."""
    from trainer import PARAMETERS

    table = Table("name", "meaning")
    for name in sorted(PARAMETERS):
        table.add_row(name, PARAMETERS[name].description)
    console.print(table)


# --- hpsearch db: Alembic migrations of hpsearch's own (hps_) tables ---------------------------

db_app = typer.Typer(help="The database schema: Alembic migrations of hpsearch's hps_ tables.")
app.add_typer(db_app, name="db")
error_console = Console(stderr=True)

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


@db_app.command("upgrade")
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


@db_app.command("downgrade")
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


@db_app.command("current")
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


# --- the stack: server, workers, the demo ---------------------------------------------------

DeviceOption = Annotated[str, typer.Option(help="auto (a GPU when present), cpu, cuda or cuda:N")]
HostOption = Annotated[str | None, typer.Option(help="bind address (default HPS_HOST, 127.0.0.1)")]
PortOption = Annotated[int | None, typer.Option(help="port (default HPS_PORT, 8000)")]


def _settings(host: str | None = None, port: int | None = None) -> Any:
    from service.config import get_settings

    settings = get_settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    return settings.model_copy(update=overrides) if overrides else settings


@app.command()
def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Run the REST API (and dashboard) server."""
    import uvicorn

    from service.api.app import create_app

    settings = _settings(host, port)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


@app.command()
def worker(
    device: DeviceOption = "auto",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (1 per core)")] = None,
    exit_when_idle: Annotated[bool, typer.Option(help="stop when no work is left")] = False,
) -> None:
    """Run one worker: claim trials of queued studies and train them, until Ctrl-C/SIGTERM."""
    from service.worker.__main__ import main

    argv = ["--device", device] + (["--threads", str(threads)] if threads else [])
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


if __name__ == "__main__":
    app()

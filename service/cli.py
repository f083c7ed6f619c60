"""The `hpsearch` command line (typer + rich)."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Lightning 2.6.6 calls torch 2.13's deprecated pytree API on every fit; users can do nothing
# about it, so the CLI does not show it (tests still see every other warning as an error).
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
)

app = typer.Typer(help="Hyperparameter search for neural-network training techniques.")
console = Console()

DEMO_CONFIG: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden_units": [128, 128], "activation": "relu", "dropout": 0.1},
    "optimizer": {"class_name": "adam", "config": {"learning_rate": 0.001}},
    "kernel_initializer": "he_normal",
    "kernel_regularizer": {"class_name": "l2", "config": {"l2": 0.0001}},
    "batch_size": 64,
    "max_epochs": 30,
    "early_stopping": {"monitor": "val_loss", "patience": 4, "restore_best_weights": True},
    "checkpoint": {"monitor": "val_loss", "save_best_only": True},
}


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
    with Progress(
        TextColumn("[bold]epoch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
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


@app.command()
def demo(
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    checkpoint_dir: Annotated[Path | None, typer.Option(help="where checkpoints go")] = None,
) -> None:
    """Train one demo trial (digits MLP, Adam, He init, L2, EarlyStopping) and print it."""
    target = checkpoint_dir or Path(tempfile.mkdtemp(prefix="hpsearch-demo-"))
    console.print(f"training the demo trial on scikit-learn's digits; checkpoints in {target}")
    _train(DEMO_CONFIG, target, device)


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


if __name__ == "__main__":
    app()

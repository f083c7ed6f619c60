"""Local commands that need no server: train one trial, list the parameter names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from service.cli._common import console, load_document

if TYPE_CHECKING:
    from trainer import TrialResult

app = typer.Typer()


class _ProgressReporter:
    """A trainer Reporter that moves a rich progress bar; it never prunes."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress = progress
        self.task = task

    def report(self, epoch: int, value: float) -> None:
        self.progress.update(self.task, completed=epoch, description=f"val_loss {value:.4f}")

    def should_prune(self) -> bool:
        return False


def _train(config_data: dict[str, Any], checkpoint_dir: Path, device: str) -> None:
    from pydantic import ValidationError

    from trainer import DatasetError, TrialConfig, run_trial

    try:
        config = TrialConfig.from_dict(config_data)
    except ValidationError as error:
        console.print(f"[red]invalid trial config:[/red]\n{error}")
        raise typer.Exit(2) from None
    from service.client.display import counting_progress

    with counting_progress("epoch", console) as progress:
        task = progress.add_task("", total=config.max_epochs)
        try:
            result = run_trial(
                config, _ProgressReporter(progress, task), checkpoint_dir, device=device
            )
        except DatasetError as error:
            console.print(f"[red]dataset error:[/red] {error}")
            raise typer.Exit(2) from None
    console.print(_metrics_table(result))
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


def _metrics_table(result: TrialResult) -> Table:
    """Final metrics per split: accuracy (classification) or mean absolute error (regression);
    error is 1 - accuracy, or MSE over the train targets' variance."""
    regression = result.task == "regression"
    table = Table(title=f"trial: {result.status}", show_header=True)
    for column in ("split", "loss", "mae" if regression else "accuracy", "error"):
        table.add_column(column, justify="right")
    for name, metrics in (("train", result.train), ("val", result.val), ("test", result.test)):
        if metrics is None:
            continue
        score = metrics.mae if regression else metrics.accuracy
        table.add_row(
            name,
            f"{metrics.loss:.4f}",
            "—" if score is None else f"{score:.4f}" if regression else f"{score:.2%}",
            f"{metrics.error:.4f}" if regression else f"{metrics.error:.2%}",
        )
    return table


@app.command("run-trial")
def run_trial_command(
    config: Annotated[Path, typer.Argument(help="a TrialConfig as JSON or YAML")],
    checkpoint_dir: Annotated[Path, typer.Option(help="where checkpoints go")] = Path(
        "hpsearch-data/trials/manual"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
) -> None:
    """Train one trial from a config file and print its metrics and diagnosis."""
    _train(load_document(config), checkpoint_dir, device)


@app.command()
def params() -> None:
    """List the parameter names a study's search_space and fixed values can use."""
    from trainer import PARAMETERS

    table = Table("name", "meaning")
    for name in sorted(PARAMETERS):
        table.add_row(name, PARAMETERS[name].description)
    console.print(table)

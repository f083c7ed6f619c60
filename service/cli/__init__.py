"""The `hpsearch` command line (typer + rich): one module per group of commands.

- `local`: run-trial, params (no server needed)
- `database`: db upgrade/downgrade/current
- `stack`: serve, worker, up, demo
- `client`: submit, studies, show, trials, cancel, export (over REST)
- `gate`: regress, baseline save (the CI regression gate)
"""

from __future__ import annotations

import typer

from service.cli import client, database, gate, local, stack, tokens

app = typer.Typer(help="Hyperparameter search for neural-network training techniques.")


def _merge(commands: typer.Typer) -> None:
    """Add a module's commands at the top level (`hpsearch run-trial`, not a sub-group)."""
    app.registered_commands.extend(commands.registered_commands)


_merge(local.app)
_merge(stack.app)
_merge(client.app)
_merge(gate.app)
app.add_typer(database.app, name="db")
app.add_typer(gate.baseline_app, name="baseline")
app.add_typer(tokens.app, name="token")

__all__ = ["app"]

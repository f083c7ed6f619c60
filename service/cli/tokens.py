"""`hpsearch token create|list|revoke`: the API's issued tokens (needs an admin token)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from rich.table import Table

from service.cli._common import console, error_console
from service.cli.client import TokenOption, UrlOption, connect

app = typer.Typer(help="Issue, list and revoke API tokens (read, write or admin scope).")

NameArgument = Annotated[str, typer.Argument(help="the token's name (letters, digits, . _ -)")]


@app.command()
def create(
    name: NameArgument,
    scope: Annotated[
        Literal["read", "write", "admin"], typer.Option(help="what the token may do")
    ] = "write",
    max_priority: Annotated[
        int | None, typer.Option(help="the highest priority its studies may have")
    ] = None,
    max_queued_trials: Annotated[
        int | None, typer.Option(min=1, help="trials its studies may hold not yet run")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Issue a token; its secret is printed this once (only its SHA-256 is stored)."""
    with connect(url, token) as api:
        issued = api.issue_token(name, scope, max_priority, max_queued_trials)
    error_console.print(
        f"token {issued['name']!r} ({issued['scope']}) issued; store its secret now, it is "
        "not shown again:",
        highlight=False,
    )
    console.print(issued["token"], highlight=False, soft_wrap=True)


@app.command("list")
def list_(url: UrlOption = None, token: TokenOption = None) -> None:
    """The issued tokens, without their secrets."""
    with connect(url, token) as api:
        tokens = api.list_tokens()
    table = Table("name", "scope", "max priority", "max queued trials", "created", "revoked")
    for item in tokens:
        table.add_row(
            item["name"],
            item["scope"],
            "—" if item["max_priority"] is None else str(item["max_priority"]),
            "—" if item["max_queued_trials"] is None else str(item["max_queued_trials"]),
            item["created_at"] or "",
            "yes" if item["revoked"] else "no",
        )
    console.print(table)


@app.command()
def revoke(name: NameArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Revoke a token: every server process refuses it within 5 s, no restart."""
    with connect(url, token) as api:
        api.revoke_token(name)
    console.print(f"token {name!r} revoked", highlight=False)

"""Client commands over REST: `submit`, `studies`, `show`, `trials`, `cancel`, `extend`,
`export`.

Each talks to a running server (`--url`/`--token`, else `HPS_URL`/`HPS_API_TOKEN`, else the
local server's token file: `service.client.connection_settings`). Every failure the server or
the network causes is one red line on stderr and exit code 1; a bad argument or spec file is
exit code 2 (typer's usage errors).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.markup import escape

from service.cli._common import console, error_console, load_document

app = typer.Typer()

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="the hpsearch server (default: HPS_URL, else http://127.0.0.1:8000)"
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="API token (default: HPS_API_TOKEN, else the local server's HPS_DATA_DIR/api-token)",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="print the server's JSON instead of a table (for scripts)")
]
StudyIdArgument = Annotated[int, typer.Argument(min=1, help="the study's id", show_default=False)]
LimitOption = Annotated[int, typer.Option(min=1, max=200, help="rows per page")]
OffsetOption = Annotated[int, typer.Option(min=0, help="rows to skip (the next page)")]

StudyStatusName = Literal["queued", "running", "completed", "failed", "cancelled"]
TrialStateName = Literal["running", "complete", "pruned", "failed", "waiting"]

if TYPE_CHECKING:  # imported where used: shell completion starts without httpx
    from service.client import ApiClient


def fail(message: str, code: int = 1) -> NoReturn:
    """One red line on stderr (never wrapped), then exit."""
    error_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


@contextmanager
def connect(url: str | None, token: str | None) -> Iterator[ApiClient]:
    """An ApiClient whose every ApiError becomes one line on stderr and exit code 1."""
    from service.client import ApiClient, ApiError

    try:
        with ApiClient.connect(url, token) as api:
            yield api
    except ApiError as error:
        fail(error.message)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="the study spec, JSON or YAML", show_default=False)],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="follow the study to its end: progress bar, then the leaderboard"
        ),
    ] = False,
    poll: Annotated[float, typer.Option(min=0.05, help="seconds between polls with --wait")] = 1.0,
    top: Annotated[int, typer.Option(min=1, max=200, help="leaderboard rows with --wait")] = 5,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Queue a study. With --wait: follow it and exit 1 unless it completes."""
    document = load_document(spec)
    try:
        json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise typer.BadParameter(f"{spec} holds a value JSON cannot carry: {error}") from None
    with connect(url, token) as api:
        study = api.submit_study(document)
        console.print(
            f"study [bold]{study['id']}[/bold] '{escape(study['name'])}' queued: "
            f"{study['n_trials']} trials  (hpsearch show {study['id']})",
            highlight=False,
        )
        for warning in study.get("warnings", []):
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
        if not wait:
            return
        from service.client.display import follow_study, print_leaderboard

        try:
            final = follow_study(api, study, console, poll_s=poll)
        except KeyboardInterrupt:
            fail(
                f"stopped following study {study['id']}; it goes on on the server "
                f"(hpsearch show {study['id']}, hpsearch cancel {study['id']})",
                130,
            )
        print_leaderboard(api, final, console, top=top)
        if final["status"] != "completed":
            fail(
                f"study {final['id']} ended {final['status']}"
                + (f": {final['error']}" if final.get("error") else "")
            )


@app.command()
def studies(
    status: Annotated[
        StudyStatusName | None, typer.Option(help="only studies in this status")
    ] = None,
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List studies, newest first (one page: --limit/--offset)."""
    with connect(url, token) as api:
        page = api.list_studies(status=status, limit=limit, offset=offset)
    if as_json:
        print_json(page)
        return
    from service.client.display import studies_table

    console.print(studies_table(page))


@app.command()
def plugins(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """The plugins installed on the server: models and datasets a spec can name, with their
    distribution, version and status (`--json` adds each one's config schema)."""
    with connect(url, token) as api:
        listing = api.list_plugins()
    if as_json:
        print_json(listing)
        return
    from service.client.display import plugins_table

    if not listing["plugins"]:
        console.print("no plugins installed (entry-point groups hpsearch.models, ...datasets)")
        return
    console.print(plugins_table(listing))


@app.command()
def show(
    study_id: StudyIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A study: status, trials by state, best trial (params and metrics), times, error."""
    with connect(url, token) as api:
        study = api.get_study(study_id)
    if as_json:
        print_json(study)
        return
    from service.client.display import study_view

    console.print(study_view(study))


@app.command()
def trials(
    study_id: StudyIdArgument,
    state: Annotated[TrialStateName | None, typer.Option(help="only trials in this state")] = None,
    sort: Annotated[
        Literal["number", "value"], typer.Option(help="by trial number or objective value")
    ] = "number",
    order: Annotated[Literal["asc", "desc"], typer.Option(help="ascending or descending")] = "asc",
    limit: LimitOption = 50,
    offset: OffsetOption = 0,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A study's trials (one page: --limit/--offset); trials without a value sort last."""
    with connect(url, token) as api:
        page = api.list_trials(
            study_id, state=state, sort=sort, order=order, limit=limit, offset=offset
        )
        if as_json:
            print_json(page)
            return
        study = api.get_study(study_id)
    from service.client.display import trials_table

    console.print(trials_table(page, study))


@app.command()
def pareto(
    study_id: StudyIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A study's Pareto front: the complete trials no other beats on every objective (a
    multi-objective study's trade-offs; a single-objective study's best trials)."""
    with connect(url, token) as api:
        front = api.get_pareto(study_id)
        if as_json:
            print_json(front)
            return
        study = api.get_study(study_id)
    from service.client.display import pareto_table

    console.print(pareto_table(front, study))


@app.command()
def extend(
    study_id: StudyIdArgument,
    trials: Annotated[int, typer.Option("--trials", min=1, help="trials to add")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Run more trials of a study: on top of a queued or running one's budget, or again
    for a completed one (the same Optuna study: the sampler sees every earlier trial)."""
    with connect(url, token) as api:
        study = api.extend_study(study_id, trials)
    console.print(
        f"study {study_id} extended by {trials}: {study['n_trials']} trials, {study['status']}"
        f"  (hpsearch show {study_id})",
        highlight=False,
    )


@app.command()
def report(
    study_id: StudyIdArgument,
    output: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="markdown, json or html (one offline file with its plots); default: from "
            "--out's suffix (.html, .json), else markdown",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write to this file instead of stdout")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """What a study teaches: each technique's importance and effect with intervals, in plain
    sentences; problems by choice; the best configuration against Keras's defaults."""
    suffixes = {".html": "html", ".htm": "html", ".json": "json"}
    chosen = output or (suffixes.get(out.suffix.lower(), "markdown") if out else "markdown")
    if chosen not in ("markdown", "json", "html"):
        raise typer.BadParameter("--format is markdown, json or html")
    with connect(url, token) as api:
        body = api.get_report(study_id)
    if chosen == "json":
        text = json.dumps(body, indent=2) + "\n"
    elif chosen == "html":
        from service.client.report_html import report_html

        text = report_html(body)
    else:
        from service.client.report_markdown import report_markdown

        text = report_markdown(body)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"report of study {study_id} written to {out}", highlight=False)


@app.command()
def cancel(study_id: StudyIdArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Cancel a study: a queued one at once; a running one starts no new trial."""
    with connect(url, token) as api:
        study = api.cancel_study(study_id)
    if study["status"] == "cancelled":
        console.print(f"study {study_id} cancelled", highlight=False)
    else:
        console.print(
            f"study {study_id} is {study['status']}: cancel requested, it starts no new trial "
            "and its running trials finish",
            highlight=False,
        )


@app.command()
def export(
    study_id: StudyIdArgument,
    format: Annotated[Literal["csv", "json"], typer.Option(help="csv or json")] = "csv",
    out: Annotated[
        Path | None, typer.Option(help="write to this file (default: stdout)", dir_okay=False)
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Every trial as one flat row (params as param_<name>, final metrics) in CSV or JSON."""
    with connect(url, token) as api:
        content = api.export_study(study_id, format)
    if out is None:
        typer.echo(content.decode("utf-8"), nl=not content.endswith(b"\n"))
        return
    try:
        out.write_bytes(content)
    except OSError as error:
        raise typer.BadParameter(
            f"cannot write {out}: {error.strerror}", param_hint="--out"
        ) from None
    console.print(f"wrote study {study_id}'s trials to {out} ({format})", highlight=False)

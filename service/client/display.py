"""Terminal views (rich) of what the REST API returns: a progress bar that follows a study, its
leaderboard, and the tables of `hpsearch studies`, `show` and `trials`.

Everything reads the server through `ApiClient` (or takes the JSON it returned); nothing here
touches the database, so `hpsearch demo` and the client commands show the same thing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from service.client.api import ApiClient
from service.states import ENDED_TRIAL_STATES

__all__ = [
    "counting_progress",
    "follow_study",
    "leaderboard",
    "print_leaderboard",
    "studies_table",
    "study_view",
    "trials_table",
]

WRAPPING_COLUMNS = {"name": 1, "objective": 1, "diagnosis": 1, "params": 2}
"""Columns that share what room the table has (by these ratios); the others never wrap."""
STATUS_STYLES = {
    "queued": "cyan",
    "running": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def counting_progress(unit: str, console: Console) -> Progress:
    """A bar that counts `unit`s (epochs, trials) with a live description and elapsed time."""
    return Progress(
        TextColumn(f"[bold]{unit}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    )


def finished_trials(study: dict[str, Any]) -> int:
    counts: dict[str, int] = study.get("trial_counts") or {}
    return sum(counts.get(state, 0) for state in ENDED_TRIAL_STATES)


def follow_study(
    api: ApiClient, study: dict[str, Any], console: Console, *, poll_s: float = 0.5
) -> dict[str, Any]:
    """A progress bar of finished trials until the study ends; returns the final study (as
    `ApiClient.get_study` returns it). `study` is what submitting it returned."""
    n_trials: int = study["n_trials"]
    final = study
    with counting_progress("trials", console) as progress:
        task = progress.add_task("", total=n_trials)
        for final in api.watch_study(study["id"], poll_s=poll_s):
            counts = final["trial_counts"]
            best = final.get("best_value")
            progress.update(
                task,
                completed=min(finished_trials(final), n_trials),
                description=f"{final['status']}, running {counts.get('running', 0)}"
                + (f", best {final['objective_metric']} {best:.4f}" if best is not None else ""),
            )
    return final


def leaderboard(api: ApiClient, study: dict[str, Any], top: int = 5) -> Table:
    """The study's best `top` complete trials, best first."""
    order = "asc" if study["direction"] == "minimize" else "desc"
    trials = api.list_trials(study["id"], state="complete", sort="value", order=order, limit=top)
    items: list[dict[str, Any]] = trials["items"]
    table = Table(
        title=f"study {study['id']}: {study['status']} — best {len(items)} trials",
        title_justify="left",
    )
    rows = [flat_metrics(trial.get("metrics")) for trial in items]
    # Regression trials record mean absolute error where classification ones have accuracy.
    regression = any("val_mae" in row and row.get("val_accuracy") is None for row in rows)
    score, shown = ("mae", number) if regression else ("acc", percent)
    for column in ("#", study["objective_metric"], f"val {score}", f"test {score}"):
        add_column(table, column)
    for column in ("diagnosis", "params"):
        add_column(table, column)
    key = "mae" if regression else "accuracy"
    for trial, metrics in zip(items, rows, strict=True):
        table.add_row(
            str(trial["number"]),
            f"{trial['value']:.4f}",
            shown(metrics.get(f"val_{key}")),
            shown(metrics.get(f"test_{key}")),
            trial.get("diagnosis") or "",
            params_text(trial["params"]),
        )
    return table


def print_leaderboard(
    api: ApiClient, study: dict[str, Any], console: Console, top: int = 5
) -> None:
    console.print(leaderboard(api, study, top))
    confirmed = study.get("confirmed_best")
    if confirmed:
        trials = ", ".join(str(n) for n in confirmed["trials"])
        console.print(
            f"confirmed best (trials {trials}): mean {study['objective_metric']} "
            f"{number(confirmed['mean'])} ± {number(confirmed['stdev'])} over "
            f"{len(confirmed['trials'])} seeds; params {params_text(confirmed['params'])}"
        )
    if study.get("error"):
        console.print(Text(study["error"], style="yellow"))


def studies_table(page: dict[str, Any]) -> Table:
    """A page of `GET /studies`: one row per study, newest first."""
    table = Table(title_justify="left", caption=page_caption(page, "studies"))
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("id", "right"),
        ("name", "left"),
        ("status", "left"),
        ("trials", "right"),
        ("best", "right"),
        ("objective", "left"),
        ("created", "left"),
    )
    for column, justify in columns:
        add_column(table, column, justify)
    for study in page["items"]:
        table.add_row(
            str(study["id"]),
            study["name"],
            status_text(study["status"], study.get("cancel_requested", False)),
            str(study["n_trials"]),
            number(study.get("best_value")),
            f"{study['direction'][:3]} {study['objective_metric']}",
            when(study.get("created_at")),
        )
    return table


def trials_table(page: dict[str, Any], study: dict[str, Any] | None = None) -> Table:
    """A page of `GET /studies/{id}/trials`."""
    objective = study["objective_metric"] if study else "value"
    title = f"study {study['id']} '{study['name']}'" if study else None
    table = Table(title=title, title_justify="left", caption=page_caption(page, "trials"))
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("#", "right"),
        ("state", "left"),
        (objective, "right"),
        ("epochs", "right"),
        ("diagnosis", "left"),
        ("time", "right"),
        ("params", "left"),
    )
    for column, justify in columns:
        add_column(table, column, justify)
    for trial in page["items"]:
        duration = trial.get("duration_s")
        table.add_row(
            str(trial["number"]),
            trial["state"] + (" (confirms)" if trial.get("confirmation") else ""),
            number(trial.get("value")),
            str(trial.get("epochs_run", "")),
            trial.get("diagnosis") or "",
            "" if duration is None else f"{duration:.1f}s",
            params_text(trial["params"]),
        )
    return table


def pareto_table(front: dict[str, Any], study: dict[str, Any]) -> Table:
    """`GET /studies/{id}/pareto`: one row per non-dominated trial, one column per objective."""
    objectives = front["objectives"]
    table = Table(
        title=f"study {study['id']} '{study['name']}': Pareto front",
        title_justify="left",
        caption=f"{len(front['trials'])} of {front['complete_trials']} complete trials "
        "(none of them beaten on every objective by another)",
    )
    add_column(table, "#", "right")
    for objective in objectives:
        arrow = "↓" if objective["direction"] == "minimize" else "↑"
        add_column(table, f"{objective['metric']} {arrow}", "right")
    add_column(table, "params")
    for trial in front["trials"]:
        values = trial.get("objective_values") or [trial.get("value")]
        table.add_row(
            str(trial["number"]), *(number(v) for v in values), params_text(trial["params"])
        )
    return table


def study_view(study: dict[str, Any]) -> RenderableType:
    """One study (`GET /studies/{id}`): status, trials by state, best trial, times, error."""
    header = Text.assemble(
        (f"study {study['id']} ", "bold"),
        (f"'{study['name']}' ", "bold"),
        status_text(study["status"], study.get("cancel_requested", False)),
    )
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    objectives = (study.get("spec") or {}).get("objective")
    if isinstance(objectives, list) and len(objectives) > 1:
        named = ", ".join(str(o.get("metric")) for o in objectives)
        grid.add_row(
            "objectives",
            f"{named} (best and gate: the first; trade-offs: hpsearch pareto {study['id']})",
        )
    else:
        grid.add_row("objective", f"{study['direction']} {study['objective_metric']}")
    counts: dict[str, int] = study.get("trial_counts") or {}
    grid.add_row(
        "trials",
        f"{finished_trials(study)}/{study['n_trials']} finished ("
        + ", ".join(f"{state} {count}" for state, count in counts.items())
        + f"); at most {study['max_parallel_trials']} at once",
    )
    best = study.get("best_trial")
    if best is None:
        grid.add_row("best", "no complete trial yet")
    else:
        grid.add_row(
            "best", f"trial {best['number']}: {study['objective_metric']} {number(best['value'])}"
        )
        grid.add_row("  params", params_text(best["params"], sep="\n"))
        metrics = flat_metrics(best.get("metrics"))
        grid.add_row("  metrics", "\n".join(f"{k}={number(v)}" for k, v in metrics.items()))
        if best.get("diagnosis"):
            grid.add_row("  diagnosis", best["diagnosis"])
    confirm_rows(grid, study)
    grid.add_row("optuna study", study["optuna_study_name"])
    for moment in ("created", "started", "finished", "updated"):
        grid.add_row(moment, when(study.get(f"{moment}_at")) or "-")
    if study.get("timeout_s") is not None:
        grid.add_row("timeout", seconds(study["timeout_s"]))
    if study.get("error"):
        grid.add_row(Text("error", style="bold red"), Text(study["error"], style="red"))
    return Group(header, grid)


def confirm_rows(grid: Table, study: dict[str, Any]) -> None:
    """A confirming study's confirmed best (spec.confirm), or when its confirmations run."""
    confirm = (study.get("spec") or {}).get("confirm")
    if not confirm:
        return
    confirmed = study.get("confirmed_best")
    if confirmed is None:
        runs = int(confirm["top"]) * int(confirm["seeds"])
        grid.add_row(
            "confirmed",
            f"none yet: the last {runs} trials retrain the {confirm['top']} best "
            f"configurations with {confirm['seeds']} more seeds each",
        )
        return
    trials = ", ".join(str(n) for n in confirmed["trials"])
    grid.add_row(
        "confirmed",
        f"trials {trials}: mean {study['objective_metric']} {number(confirmed['mean'])} "
        f"± {number(confirmed['stdev'])} over {len(confirmed['trials'])} seeds "
        "(the configuration the CI gate retrains)",
    )
    if confirmed.get("confirmations_mean") is not None:
        grid.add_row(
            "  new seeds",
            f"mean {number(confirmed['confirmations_mean'])} over its confirmations alone "
            "(no selection flatters it)",
        )
    if confirmed.get("diverged_left_out"):
        grid.add_row(
            "  left out",
            f"{confirmed['diverged_left_out']} configuration(s) that diverged on one of their "
            "seeds",
        )
    grid.add_row("  params", params_text(confirmed["params"], sep="\n"))


def plugins_table(listing: dict[str, Any]) -> Table:
    """The server's installed plugins: what a spec can name, from which distribution."""
    allowed = listing.get("allow_list")
    caption = "HPS_PLUGINS unset: every installed plugin is allowed"
    if allowed is not None:
        caption = f"HPS_PLUGINS: {', '.join(allowed) or '(none)'}"
    table = Table(caption=caption, caption_justify="left")
    for header in ("kind", "name", "distribution", "version", "status", "description"):
        add_column(table, header)
    for plugin in listing["plugins"]:
        status = plugin["status"]
        if plugin.get("error"):
            status = f"{status}: {plugin['error']}"
        table.add_row(
            plugin["kind"],
            plugin["name"],
            plugin.get("distribution") or "",
            plugin.get("version") or "",
            Text(status, style="green" if plugin["status"] == "loaded" else "yellow"),
            plugin.get("description") or "",
        )
    return table


def add_column(table: Table, header: str, justify: JustifyMethod = "left") -> None:
    ratio = WRAPPING_COLUMNS.get(header)
    table.add_column(header, justify=justify, no_wrap=ratio is None, overflow="fold", ratio=ratio)


def status_text(status: str, cancel_requested: bool = False) -> Text:
    label = status + (" (cancel requested)" if cancel_requested and status == "running" else "")
    return Text(label, style=STATUS_STYLES.get(status, ""))


def page_caption(page: dict[str, Any], noun: str) -> str:
    """ "1-50 of 120 studies; next page: --offset 50"."""
    shown = len(page["items"])
    offset: int = page["offset"]
    total: int = page["total"]
    if shown == 0:
        return f"no {noun}" + (f" at offset {offset} (of {total})" if total else "")
    caption = f"{offset + 1}-{offset + shown} of {total} {noun}"
    if offset + shown < total:
        caption += f"; next page: --offset {offset + shown}"
    return caption


def flat_metrics(metrics: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """{"val": {"loss": 1}} -> {"val_loss": 1}: the same keys the export uses."""
    flat: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            flat.update(flat_metrics(value, f"{prefix}{key}_"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def params_text(params: dict[str, Any], sep: str = ", ") -> str:
    return sep.join(f"{name}={short(value)}" for name, value in sorted(params.items()))


def short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def number(value: Any) -> str:
    """An objective or metric value: 5 significant digits; blank when there is none."""
    if value is None:
        return ""
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def seconds(value: float) -> str:
    """A duration the way people say it: 45 s, 12 min, 5 h, 7 d."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if value >= 2 * size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g} s"


def when(timestamp: str | None) -> str:
    """An API timestamp (ISO 8601) in local time, to the second."""
    if not timestamp:
        return ""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")

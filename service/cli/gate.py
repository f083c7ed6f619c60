"""The CI regression gate: `regress` and `baseline save` (see docs/ci-gate.md).

Exit codes: 0 pass, 1 regression, 2 error. Any error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli._common import console, load_document

if TYPE_CHECKING:
    from service.client import ApiClient
    from service.gate import Measurement, SeedRun

logger = logging.getLogger(__name__)

app = typer.Typer()
baseline_app = typer.Typer(
    help="Baselines for `hpsearch regress`: a study's best configuration retrained with k seeds."
)

UrlOption = Annotated[
    str | None, typer.Option(help="server URL (default HPS_URL, else http://127.0.0.1:8000)")
]
TokenOption = Annotated[str | None, typer.Option(help="API token (default HPS_API_TOKEN)")]
SeedsOption = Annotated[
    int, typer.Option(min=1, help="k: how many training seeds the best configuration is run with")
]
DeviceOption = Annotated[str, typer.Option(help="where to retrain: auto, cpu, cuda or cuda:N")]


@app.command()
def regress(
    study: Annotated[
        int | None, typer.Option("--study", help="candidate: an existing, finished study")
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(
            help="candidate: a study spec (JSON/YAML) run now, on the server named by --url / "
            "HPS_URL, else on a temporary local stack"
        ),
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="baseline: a file from `hpsearch baseline save`")
    ] = None,
    baseline_study: Annotated[
        int | None, typer.Option(help="baseline: an existing, finished study")
    ] = None,
    seeds: SeedsOption = 3,
    tolerance: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="worsening always allowed, in the objective's units (floor of the seed spread)",
        ),
    ] = 0.0,
    metric: Annotated[
        list[str] | None,
        typer.Option(help="also gate this metric (e.g. test_accuracy); repeatable"),
    ] = None,
    allow_data_change: Annotated[
        bool,
        typer.Option(
            "--allow-data-change",
            help="compare even when the data fingerprints differ (a warning, not exit 2)",
        ),
    ] = False,
    junit: Annotated[Path | None, typer.Option(help="write a JUnit XML report here")] = None,
    summary: Annotated[Path | None, typer.Option(help="write a Markdown summary here")] = None,
    save_candidate: Annotated[
        Path | None, typer.Option(help="also save the candidate as a baseline file here")
    ] = None,
    device: DeviceOption = "auto",
    workers: Annotated[
        int, typer.Option(min=1, help="worker processes of the temporary local stack (--spec)")
    ] = 1,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Compare a candidate with a baseline: exit 0 pass, 1 regression, 2 error.

    Both best configurations are retrained with the same k seeds.

    The candidate regresses when it is worse by more than max(--tolerance, seed spread).
    """
    from service.gate import GateError, junit_error_xml, markdown_error

    started = time.monotonic()
    try:
        with ExitStack() as stack:
            code = _regress(
                stack,
                _Options(
                    study=study,
                    spec=spec,
                    baseline=baseline,
                    baseline_study=baseline_study,
                    seeds=seeds,
                    tolerance=tolerance,
                    metrics=tuple(metric or ()),
                    allow_data_change=allow_data_change,
                    junit=junit,
                    summary=summary,
                    save_candidate=save_candidate,
                    device=device,
                    workers=workers,
                    url=url,
                    token=token,
                ),
                started,
            )
    except Exception as error:  # the gate's contract: any failure is exit 2 with one line
        logger.debug("hpsearch regress failed", exc_info=error)
        message = _one_line(error, GateError)
        if not isinstance(error, _DecidedError):  # a decided error has written its reports
            for path, text in (
                (junit, junit_error_xml(message, time_s=time.monotonic() - started)),
                (summary, markdown_error(message)),
            ):
                if path is not None:
                    _write_quietly(path, text)
        typer.echo(f"hpsearch regress: error: {message}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@baseline_app.command("save")
def baseline_save(
    study_id: Annotated[int, typer.Argument(help="a finished study")],
    out: Annotated[Path, typer.Option("--out", help="the baseline file to write")] = Path(
        "baseline.json"
    ),
    seeds: SeedsOption = 3,
    device: DeviceOption = "auto",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Retrain a study's best configuration with k seeds and save it as a baseline file."""
    from service.gate import GateError, save_baseline

    try:
        with ExitStack() as stack:
            measurement = _measure_study(stack, _Connection(url, token), study_id, seeds, device)
            _refuse_diverged(measurement)
            save_baseline(measurement, out)
    except Exception as error:  # one line and exit 2, like regress
        logger.debug("hpsearch baseline save failed", exc_info=error)
        typer.echo(f"hpsearch baseline save: error: {_one_line(error, GateError)}", err=True)
        raise typer.Exit(2) from None
    console.print(
        f"baseline of study {study_id}: {measurement.objective_metric} "
        f"{measurement.objective_value:.6g} (mean of seeds {measurement.seeds}) -> {out}",
        highlight=False,
    )


# --- the work behind the commands ------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    study: int | None
    spec: Path | None
    baseline: Path | None
    baseline_study: int | None
    seeds: int
    tolerance: float
    metrics: tuple[str, ...]
    allow_data_change: bool
    junit: Path | None
    summary: Path | None
    save_candidate: Path | None
    device: str
    workers: int
    url: str | None
    token: str | None


class _Connection:
    """The server named by --url/--token or the environment, connected on first use."""

    def __init__(self, url: str | None, token: str | None) -> None:
        self.url = url
        self.token = token
        self._client: ApiClient | None = None

    def client(self, stack: ExitStack) -> ApiClient:
        if self._client is None:
            from service.client import ApiClient

            self._client = stack.enter_context(ApiClient.connect(self.url, self.token))
        return self._client

    @property
    def named(self) -> bool:
        """A server was named (so `--spec` runs there, not on a temporary local stack)."""
        return bool(self.url or os.environ.get("HPS_URL"))


def _regress(stack: ExitStack, options: _Options, started: float) -> int:
    from service.gate import (
        GateError,
        judge,
        junit_xml,
        load_baseline,
        markdown_summary,
        measure,
        save_baseline,
        seeds_for,
    )

    if (options.study is None) == (options.spec is None):
        raise GateError("name the candidate with exactly one of --study ID and --spec FILE")
    if (options.baseline is None) == (options.baseline_study is None):
        raise GateError(
            "name the baseline with exactly one of --baseline FILE and --baseline-study ID"
        )
    connection = _Connection(options.url, options.token)
    if options.baseline is not None:
        baseline = load_baseline(options.baseline)
        baseline_label = f"`{options.baseline}` ({_describe(baseline)})"
    else:
        assert options.baseline_study is not None
        console.print(f"baseline: retraining study {options.baseline_study}'s best configuration")
        baseline = _measure_study(
            stack, connection, options.baseline_study, options.seeds, options.device
        )
        baseline_label = _describe(baseline)
    seeds = seeds_for(options.seeds, baseline)
    if options.spec is not None:
        study = _run_spec(stack, connection, options)
        server = connection.url if connection.named else None
    else:
        assert options.study is not None
        study = _fetch(stack, connection, options.study)
        server = connection.client(stack).url
    console.print(f"candidate: retraining study {study['id']}'s best configuration")
    candidate = measure(
        study, seeds, device=options.device, server=server, on_run=_seed_printer(study)
    )
    verdict = judge(
        baseline,
        candidate,
        options.tolerance,
        options.metrics,
        allow_data_change=options.allow_data_change,
    )
    for check in verdict.checks:
        console.print(check.message, markup=False, highlight=False, soft_wrap=True)
    for reported in verdict.reported:
        console.print(reported.message, markup=False, highlight=False, soft_wrap=True)
    console.print(verdict.fingerprint.message, markup=False, highlight=False, soft_wrap=True)
    if options.save_candidate is not None:
        save_baseline(candidate, options.save_candidate)
    if options.junit is not None:
        _write(
            options.junit,
            junit_xml(verdict, baseline, candidate, time_s=time.monotonic() - started),
        )
    if options.summary is not None:
        _write(
            options.summary,
            markdown_summary(
                verdict,
                baseline,
                candidate,
                baseline_label=baseline_label,
                candidate_label=_describe(candidate),
            ),
        )
    if verdict.fingerprint.is_error:
        raise _DecidedError(verdict.fingerprint.message)
    console.print(f"hpsearch regress: {verdict.outcome}", highlight=False)
    return verdict.exit_code


class _DecidedError(Exception):
    """An exit-2 verdict whose reports are already written."""


def _measure_study(
    stack: ExitStack, connection: _Connection, study_id: int, seeds: int, device: str
) -> Measurement:
    from service.gate import measure, seeds_for

    study = _fetch(stack, connection, study_id)
    return measure(
        study,
        seeds_for(seeds),
        device=device,
        server=connection.client(stack).url,
        on_run=_seed_printer(study),
    )


def _fetch(stack: ExitStack, connection: _Connection, study_id: int) -> dict[str, Any]:
    from service.gate.studies import fetch_study

    return fetch_study(connection.client(stack), study_id)


def _run_spec(stack: ExitStack, connection: _Connection, options: _Options) -> dict[str, Any]:
    from service.gate import GateError
    from service.gate.embedded import embedded_stack
    from service.gate.studies import run_study

    assert options.spec is not None
    try:
        spec = load_document(options.spec)
    except typer.BadParameter as error:
        raise GateError(error.message) from None
    if connection.named:
        console.print(f"candidate: running {options.spec} on {connection.client(stack).url}")
        return run_study(connection.client(stack), spec, on_progress=_StudyPrinter())
    console.print(f"candidate: running {options.spec} on a temporary local stack")
    with embedded_stack(options.workers, options.device) as local:
        return run_study(local.api, spec, on_progress=_StudyPrinter(), still_running=local.problem)


class _StudyPrinter:
    """One line each time the number of finished trials changes (CI logs, not a live bar)."""

    def __init__(self) -> None:
        self.last: tuple[str, int] | None = None

    def __call__(self, study: dict[str, Any]) -> None:
        counts = study.get("trial_counts", {})
        done = sum(counts.get(state, 0) for state in ("complete", "pruned", "failed"))
        if (study["status"], done) == self.last:
            return
        self.last = (study["status"], done)
        best = study.get("best_value")
        console.print(
            f"study {study['id']}: {study['status']}, {done}/{study['n_trials']} trials done"
            + (f", best {study['objective_metric']} {best:.6g}" if best is not None else ""),
            highlight=False,
        )


def _seed_printer(study: dict[str, Any]) -> Callable[[SeedRun], None]:
    def show(run: SeedRun) -> None:
        value = "diverged" if run.objective_value is None else f"{run.objective_value:.6g}"
        console.print(
            f"  seed {run.seed}: {study.get('objective_metric')} {value}", highlight=False
        )

    return show


def _describe(measurement: Measurement) -> str:
    source = measurement.source
    name = f" '{source.study_name}'" if source.study_name else ""
    return f"study {source.study_id}{name}" if source.study_id is not None else "a measurement"


def _refuse_diverged(measurement: Measurement) -> None:
    from service.gate import GateError

    diverged = [run.seed for run in measurement.runs if run.objective_value is None]
    if diverged:
        raise GateError(
            f"seeds {diverged} diverged; a baseline needs a finite value for every seed"
        )


def _write(path: Path, text: str) -> None:
    from service.gate import GateError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise GateError(f"cannot write {path}: {error.strerror}") from None


def _write_quietly(path: Path, text: str) -> None:
    """An error report is best effort: the exit code and the stderr line say it anyway."""
    from service.gate import GateError

    with contextlib.suppress(GateError):
        _write(path, text)


def _one_line(error: BaseException, expected: type[BaseException]) -> str:
    """The error as one line; an unexpected kind of error is named."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, expected | _DecidedError):
        return text
    return f"{type(error).__name__}: {text}"

"""Dashboard load: the study page of a 10,000-trial study in headless Chromium.

Seeds a fresh PostgreSQL database with one study of 10,000 finished trials × 20 epochs (the
seeding of `api_load.py`, plus varied diagnoses, techniques and train/validation errors so
every plot has data), starts one uvicorn process on the app, and opens
`/studies/{id}` in Debian's Chromium through Playwright `--loads` times. For each load it reads
the marks the page sets (`performance.mark`, milliseconds since navigation start):

    hps:table     the trial table rendered (first page of 50)
    hps:plotly    plotly.min.js loaded and run (4.8 MB; fetched in parallel with the data)
    hps:history   the optimization history plot drawn (all 10,000 trials, best so far)
    hps:plots     every plot drawn (parallel coordinates, importances, intermediate values, ...)

"cold" loads use a new browser context each (empty HTTP cache: plotly.min.js is fetched and
compiled every time); "warm" loads reload the page in one context. Target: table and history
≤ 2 s.

    .venv/bin/python bench/dashboard_load.py [--url postgresql+psycopg://postgres@127.0.0.1/postgres]
        [--trials 10000] [--loads 7]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import time

import httpx
from api_load import TOKEN, drop_database, fresh_database, seed, uvicorn_server
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import text

from service.db.engine import create_db_engine
from service.db.migrate import upgrade

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MARKS = ("hps:table", "hps:plotly", "hps:history", "hps:plots")
PLOTS = ("plotErrors", "plotTechniques", "plotIntermediate", "plotParallel", "plotImportances")
"""The study page measures each plot after the history (`performance.measure('hps:<name>')`)."""

VARY = """
UPDATE hps_trials SET
  diagnosis = (ARRAY['good_fit', 'overfitting', 'underfitting'])[1 + number % 3],
  metrics = json_build_object(
    'train_error', 0.02 + (number % 97) / 400.0,
    'val_error', 0.05 + (number % 89) / 300.0,
    'val_loss', value),
  params = json_build_object(
    'optimizer', params->>'optimizer',
    'learning_rate', (params->>'learning_rate')::float,
    'regularizer', (ARRAY['none', 'l2', 'orthogonal'])[1 + number % 3],
    'initializer', (ARRAY['glorot_uniform', 'he_normal'])[1 + number % 2],
    'dropout', (number % 41) / 100.0)
WHERE study_id = :study_id
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def seed_study(url: str, n_trials: int) -> int:
    study_id = seed(url, n_trials, 20)
    engine = create_db_engine(url)
    with engine.begin() as connection:
        connection.execute(text(VARY), {"study_id": study_id})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE hps_trials")
    engine.dispose()
    return study_id


def measure(page: Page, address: str) -> dict[str, float]:
    page.goto(address)
    page.wait_for_function(
        "() => performance.getEntriesByName('hps:plots').length > 0", timeout=120_000
    )
    marks: dict[str, float] = page.evaluate(
        "names => Object.fromEntries(names.map(n => [n, performance.getEntriesByName(n)[0]"
        ".startTime]))",
        list(MARKS),
    )
    durations: dict[str, float] = page.evaluate(
        "names => Object.fromEntries(names.map(n => [n, (performance.getEntriesByName("
        "'hps:' + n)[0] || {duration: NaN}).duration]))",
        list(PLOTS),
    )
    marks.update({f"  {name} (own time)": ms for name, ms in durations.items()})
    rows = page.locator("#trials tbody tr").count()
    points = page.evaluate("document.getElementById('plot-history').data[1].x.length")
    if rows != 50 or points < 1:
        raise RuntimeError(f"the page is not complete: {rows} rows, {points} history points")
    return marks


def measure_report(page: Page, address: str) -> dict[str, float]:
    """The technique report page: its panels drawn (`hps:report`)."""
    page.goto(address)
    page.wait_for_function(
        "() => performance.getEntriesByName('hps:report').length > 0", timeout=120_000
    )
    started: float = page.evaluate("performance.getEntriesByName('hps:report')[0].startTime")
    if page.locator(".technique").count() < 1:
        raise RuntimeError("the report page shows no technique")
    return {"hps:report (report page)": started}


def report(label: str, loads: list[dict[str, float]]) -> None:
    for mark in loads[0]:
        values = [load[mark] / 1000 for load in loads]
        print(
            f"{label:<5} {mark:<30} median {statistics.median(values):5.2f} s  "
            f"[{min(values):.2f}-{max(values):.2f}]  n={len(values)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=7)
    args = parser.parse_args()
    url = fresh_database(args.url)
    upgrade(url)
    started = time.perf_counter()
    study_id = seed_study(url, args.trials)
    print(f"seeded {args.trials} trials x 20 epochs in {time.perf_counter() - started:.1f} s")
    try:
        with uvicorn_server(url, free_port()) as base:
            summary = httpx.get(
                f"{base}/api/v1/studies/{study_id}/summary",
                headers={"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"},
            )
            print(
                f"summary: {len(summary.content) / 1e6:.2f} MB of JSON "
                f"({int(summary.headers.get('content-length', 0)) / 1e6:.2f} MB sent), "
                f"{summary.elapsed.total_seconds() * 1000:.0f} ms"
            )
            for endpoint in ("importances", "report"):  # the expensive panels, cold and again
                for attempt in ("first", "again"):
                    answer = httpx.get(
                        f"{base}/api/v1/studies/{study_id}/{endpoint}",
                        headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=120,
                    )
                    answer.raise_for_status()
                    print(f"{endpoint} ({attempt}): {answer.elapsed.total_seconds() * 1000:.0f} ms")
            address = f"{base}/studies/{study_id}?token={TOKEN}"
            report_address = f"{base}/studies/{study_id}/report?token={TOKEN}"
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                cold = []
                for _ in range(args.loads + 1):  # the first load warms the server; not counted
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    cold.append(measure(context.new_page(), address))
                    context.close()
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                warm = [measure(page, address) for _ in range(args.loads + 1)]
                reports = []
                for _ in range(args.loads + 1):
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    reports.append(measure_report(context.new_page(), report_address))
                    context.close()
                browser.close()
            report("cold", cold[1:])
            report("warm", warm[1:])
            report("cold", reports[1:])
    finally:
        drop_database(args.url, url)


if __name__ == "__main__":
    main()

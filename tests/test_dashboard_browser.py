"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright) against a
real server on SQLite: token from the URL, plots rendered, a study submitted and cancelled,
a live study followed without reload, a trial's curves and checkpoint.

Screenshots go to `test-artifacts/` (gitignored) for a look at what the browser drew.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import create_db_engine, make_session_factory, transaction
from service.db.models import Study, Trial, utcnow
from service.stack import BackgroundServer
from tests.api_fixtures import TOKEN, make_settings, seed_study, seed_trial
from tests.conftest import create_schema, require

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
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
TIMEOUT_MS = 30_000
PLOTS = (
    "plot-history",
    "plot-parallel",
    "plot-importances",
    "plot-intermediate",
    "plot-errors",
    "plot-techniques",
)

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:  # the dev extra is not installed: every test here skips (fails under CI)
    HAVE_PLAYWRIGHT = False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Served:
    url: str
    database_url: str
    data_dir: Path
    db: sessionmaker[Session]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The real server (uvicorn in a thread) on a migrated SQLite file."""
    root = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{root / 'hps.db'}"
    create_schema(url)
    settings = make_settings(url, root / "data", port=free_port())
    server = BackgroundServer(settings)
    server.start()
    engine = create_db_engine(url)
    try:
        yield Served(
            f"http://127.0.0.1:{settings.port}", url, root / "data", make_session_factory(engine)
        )
    finally:
        server.stop()
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(HAVE_PLAYWRIGHT, "playwright is not installed (pip install -e '.[dev]')")
    require(Path(CHROMIUM).is_file(), "Chromium is not installed (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (empty local storage) whose console errors fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    expected = ("status of 401", "status of 422")  # the token prompt, a refused spec
    try:
        yield tab
    finally:
        context.close()
    unexpected = [e for e in errors if not any(status in e for status in expected)]
    assert not unexpected, unexpected


def screenshot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def traces(page: Page, plot_id: str) -> int:
    """Traces Plotly drew into the plot (0 when it holds no Plotly figure)."""
    count: int = page.evaluate(
        """id => { const node = document.getElementById(id);
        return node && node.classList.contains('js-plotly-plot') && node.querySelector(
            '.plot-container') ? node.data.length : 0; }""",
        plot_id,
    )
    return count


def make_optuna_study(url: str, name: str) -> None:
    """An Optuna record for the seeded study, so its importances can be computed."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=1)
        )
        study.optimize(
            lambda t: (
                t.suggest_float("learning_rate", 1e-4, 0.1, log=True)
                + 0.01 * len(t.suggest_categorical("optimizer", ["sgd", "adam", "rmsprop"]))
            ),
            n_trials=12,
        )
    finally:
        storage.engine.dispose()


def seed_running_study(served: Served, trials: int) -> int:
    name = f"hps-browser-{os.urandom(4).hex()}"
    make_optuna_study(served.database_url, name)
    study = seed_study(
        served.db,
        name="live",
        status="running",
        n_trials=8,
        optuna_study_name=name,
        spec={"name": "live", "fixed": {"initializer": "he_normal"}},
    )
    for number in range(trials):
        add_trial(served, study, number)
    return study


def add_trial(served: Served, study: int, number: int, **overrides: Any) -> None:
    pruned = number % 4 == 3
    values: dict[str, Any] = {
        "state": "pruned" if pruned else "complete",
        "value": None if pruned else 1.0 / (number + 2),
        "params": {
            "optimizer": ["sgd", "adam", "rmsprop"][number % 3],
            "regularizer": ["none", "l2"][number % 2],
            "learning_rate": 0.001 * (number + 1),
        },
        "metrics": {"train_error": 0.05 * number, "val_error": 0.08 * number + 0.02},
        "diagnosis": ["good_fit", "overfitting", "underfitting"][number % 3],
        "device": "cpu",
        "best_epoch": 2 if pruned else 4,
        "stopped_early": number % 2 == 0,
        "problem_labels": ",dead_units," if number == 1 else None,
        **overrides,
    }
    seed_trial(served.db, study, number, epochs=2 if pruned else 5, **values)


def test_studies_page_takes_the_token_from_the_url_submits_and_cancels(
    served: Served, page: Page
) -> None:
    page.goto(f"{served.url}/?token={TOKEN}")
    page.wait_for_function("() => !location.search.includes('token')")  # stripped from the URL
    assert page.evaluate("localStorage.getItem('hpsearch-token')") == TOKEN

    page.select_option("#example", "digits-cnn")  # examples/digits-cnn.json
    assert '"digits-cnn"' in page.input_value("#spec")
    page.click("#submit")
    expect(page.locator("#submit-result")).to_contain_text("Queued")
    row = page.locator("#studies tbody tr", has_text="digits-cnn").first
    expect(row).to_contain_text("queued")
    expect(row).to_contain_text("0/8")

    page.fill(
        "#spec",
        "name: pasted-yaml\nsearch_space:\n  learning_rate: {type: float, low: 0.001, high: 0.1}\n"
        "budget:\n  n_trials: 3\n  max_epochs: 2\n",
    )
    page.click("#submit")
    pasted = page.locator("#studies tbody tr", has_text="pasted-yaml")
    expect(pasted).to_contain_text("queued")
    expect(pasted).to_contain_text("0/3")

    pasted.locator("button.cancel").click()
    expect(pasted).to_contain_text("cancelled")
    expect(pasted.locator("button.cancel")).to_have_count(0)
    screenshot(page, "studies")

    page.fill("#spec", "budget: {n_trials: 0}\n")
    page.click("#submit")
    expect(page.locator("#submit-result")).to_contain_text("Refused")


def test_the_page_asks_for_a_token_once_and_keeps_it(served: Served, page: Page) -> None:
    page.goto(served.url + "/")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    dialog.locator("input").fill(TOKEN)
    dialog.locator("button[type=submit]").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#token-button")).to_have_text("Token ✓")
    page.reload()
    expect(page.locator("#studies tbody tr").first).to_be_visible()
    expect(dialog).to_be_hidden()


def test_study_page_draws_every_plot_and_follows_a_live_study(served: Served, page: Page) -> None:
    study = seed_running_study(served, trials=5)
    page.goto(f"{served.url}/studies/{study}?token={TOKEN}")
    page.wait_for_function("() => performance.getEntriesByName('hps:plots').length > 0")
    expect(page.locator("#trials tbody tr")).to_have_count(5)
    for plot in PLOTS:
        assert traces(page, plot) > 0, plot
    assert page.locator(".js-plotly-plot .plot-container").count() == len(PLOTS)
    assert traces(page, "plot-history") == 2  # the objective and the best so far
    best = page.evaluate("document.getElementById('plot-history').data[1].y.at(-1)")
    assert best == pytest.approx(1 / 6, rel=1e-5)  # six significant digits on the wire
    screenshot(page, "study")

    # Filters and sorting go to the server.
    page.select_option("#filter-state", "pruned")
    expect(page.locator("#trials tbody tr")).to_have_count(1)
    page.select_option("#filter-state", "")
    page.select_option("#filter-problem", "dead_units")
    expect(page.locator("#trials tbody tr")).to_have_count(1)
    expect(page.locator("#trials tbody tr").first).to_have_attribute("data-number", "1")
    expect(page.locator("#trials tbody tr td.problems-cell")).to_have_text("dead units")
    page.select_option("#filter-problem", "")
    page.click("#trials th[data-sort=value]")
    expect(page.locator("#trials tbody tr").first).to_have_attribute("data-number", "4")

    # Trials the worker would record appear without a reload.
    page.evaluate("window.__notReloaded = true")
    for number in (5, 6):
        add_trial(served, study, number)
    expect(page.locator("#page-info")).to_contain_text("of 7")
    page.wait_for_function("() => document.getElementById('plot-history').data[1].x.length === 7")
    with transaction(served.db) as session:
        session.execute(
            update(Study)
            .where(Study.id == study)
            .values(status="completed", finished_at=utcnow(), best_value=1 / 6)
        )
    expect(page.locator("#facts")).to_contain_text("completed")
    expect(page.locator("#cancel")).to_be_hidden()
    assert page.evaluate("window.__notReloaded") is True
    screenshot(page, "study-live")


def test_a_multi_objective_study_draws_its_pareto_front(served: Served, page: Page) -> None:
    study = seed_running_study(served, trials=0)
    objectives = [{"metric": "val_data_loss"}, {"metric": "n_parameters"}]
    with transaction(served.db) as session:
        session.execute(
            update(Study)
            .where(Study.id == study)
            .values(spec={"name": "live", "objective": objectives, "pruner": {"name": "none"}})
        )
    points = [(0.5, 100.0), (0.25, 400.0), (0.75, 50.0), (0.6, 300.0)]  # 3 is dominated by 0
    for number, (loss, size) in enumerate(points):
        add_trial(
            served, study, number, state="complete", value=loss, objective_values=[loss, size]
        )
    page.goto(f"{served.url}/studies/{study}?token={TOKEN}")
    page.wait_for_function("() => performance.getEntriesByName('hps:pareto').length > 0")
    plot = "document.getElementById('plot-pareto')"
    dominated, front = page.evaluate(f"{plot}.data.map((t) => t.x.map((x, i) => [x, t.y[i]]))")
    assert dominated == [[0.6, 300.0]]
    assert front == [[0.25, 400.0], [0.5, 100.0], [0.75, 50.0]]  # along the first objective
    title = page.evaluate(f"{plot}.layout.title.text")
    assert title == "Pareto front: 3 of 4 complete trials"
    expect(page.locator("#facts")).to_contain_text("objectivesval_data_loss, n_parameters")
    assert page.evaluate(f"{plot}.layout.yaxis.title.text") == "n_parameters (lower is better)"
    screenshot(page, "study-pareto")


def test_a_confirming_study_shows_its_confirmed_best_beside_its_best_draw(
    served: Served, page: Page
) -> None:
    study = seed_running_study(served, trials=0)
    with transaction(served.db) as session:
        session.execute(
            update(Study)
            .where(Study.id == study)
            .values(spec={"name": "live", "confirm": {"top": 1, "seeds": 2}})
        )
    steady = {"optimizer": "adam", "learning_rate": 0.001}
    for number, (value, params, confirmation) in enumerate(
        [(0.5, {"optimizer": "sgd"}, False), (0.25, steady, False), (0.75, steady, True)]
    ):
        add_trial(
            served,
            study,
            number,
            state="complete",
            value=value,
            params=params,
            confirmation=confirmation,
        )
    add_trial(  # sgd blew up on a new seed: left out of the confirmed best, and said so
        served,
        study,
        3,
        state="failed",
        value=None,
        params={"optimizer": "sgd"},
        confirmation=True,
        problem_labels=",diverged,",
    )
    page.goto(f"{served.url}/studies/{study}?token={TOKEN}")
    facts = page.locator("#facts")
    expect(facts).to_contain_text("confirmed best0.5 ± 0.3536 over 2 seeds (trials 1, 2)")
    expect(facts).to_contain_text("; 1 configuration(s) that diverged on a seed left out")
    expect(facts).to_contain_text("best0.25 (trial 1)")
    assert page.locator("#facts a", has_text="2").get_attribute("href") == (
        f"/studies/{study}/trials/2"
    )
    screenshot(page, "study-confirmed")


def test_a_single_objective_study_has_no_pareto_plot(served: Served, page: Page) -> None:
    study = seed_running_study(served, trials=3)
    page.goto(f"{served.url}/studies/{study}?token={TOKEN}")
    page.wait_for_function("() => performance.getEntriesByName('hps:plots').length > 0")
    expect(page.locator("#plot-pareto")).to_be_hidden()


def test_a_searched_batch_norm_joins_the_technique_groups(served: Served, page: Page) -> None:
    study = seed_running_study(served, trials=0)
    for number in range(4):
        add_trial(
            served,
            study,
            number,
            state="complete",
            value=1.0 / (number + 2),
            params={"optimizer": "adam", "regularizer": "l2", "batch_norm": number % 2 == 0},
        )
    page.goto(f"{served.url}/studies/{study}?token={TOKEN}")
    page.wait_for_function("() => performance.getEntriesByName('hps:plots').length > 0")
    plot = "document.getElementById('plot-techniques')"
    title = page.evaluate(f"{plot}.layout.title.text")
    assert title == "Objective by optimizer × regularizer × initializer × batch_norm"
    names = sorted(page.evaluate(f"{plot}.data.map(t => t.name)"))
    assert names == [
        "adam × l2 × he_normal × batch_norm off",
        "adam × l2 × he_normal × batch_norm on",
    ]


def test_trial_page_curves_markers_and_checkpoint(served: Served, page: Page) -> None:
    study = seed_study(served.db, status="completed", n_trials=2)
    checkpoint = served.data_dir / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"\0" * 4096)
    first = seed_trial(served.db, study, 0, state="failed", value=None, error="worker lost")
    seed_trial(
        served.db,
        study,
        1,
        epochs=6,
        best_epoch=4,
        stopped_early=True,
        diagnosis="overfitting",
        diagnosis_detail="train error is low but validation error is much higher",
        device="cpu",
        retry_of_id=first,
        resumed_from_epoch=2,
        checkpoint_path=str(checkpoint),
        problems=[
            {
                "label": "vanishing_gradients",
                "epoch": 6,
                "evidence": "first/last layer kernel gradient norm ratio 1e-05",
                "hint": "He/Glorot initialization usually helps",
            }
        ],
    )
    page.goto(f"{served.url}/studies/{study}/trials/1?token={TOKEN}")
    page.wait_for_function("() => performance.getEntriesByName('hps:curves').length > 0")
    assert traces(page, "plot-score") == 2
    assert traces(page, "plot-gradients") == 2  # one per kernel layer
    assert page.evaluate("document.getElementById('plot-gradients').layout.yaxis.type") == "log"
    expect(page.locator("#problems li")).to_have_count(1)
    expect(page.locator("#problems li")).to_contain_text("vanishing gradients: first/last layer")
    expect(page.locator("#problems li em")).to_have_text("He/Glorot initialization usually helps")
    # the seeded curve's data loss differs from its loss (a penalty): both pairs are drawn
    assert page.evaluate("document.getElementById('plot-loss').data.map(t => t.name)") == [
        "train loss",
        "validation loss",
        "train data loss (no penalty)",
        "validation data loss (no penalty)",
    ]
    shapes = page.evaluate(
        "document.getElementById('plot-loss').layout.shapes.map(s => [s.x0, s.line.color])"
    )
    assert sorted(x for x, _ in shapes) == [4, 6]  # best epoch, early-stopping point
    expect(page.locator("#facts")).to_contain_text("overfitting")
    expect(page.locator("#params")).to_contain_text("learning_rate")
    expect(page.locator("#diagnosis-detail")).to_contain_text("validation error is much higher")
    expect(page.locator("#retries")).to_contain_text("retry of trial 0")
    expect(page.locator("#retries")).to_contain_text("resumed from epoch 2")
    screenshot(page, "trial")
    with page.expect_download() as download:
        page.click("#checkpoint")
    assert download.value.suggested_filename == f"study-{study}-trial-1.ckpt"
    assert Path(download.value.path()).stat().st_size == 4096


def test_a_regression_trial_plots_mean_absolute_error(served: Served, page: Page) -> None:
    study = seed_study(served.db, status="completed", n_trials=1)
    seed_trial(served.db, study, 0, epochs=5, regression=True)
    page.goto(f"{served.url}/studies/{study}/trials/0?token={TOKEN}")
    page.wait_for_function("() => performance.getEntriesByName('hps:curves').length > 0")
    plot = page.evaluate(
        "(() => { const p = document.getElementById('plot-score');"
        " return {title: p.layout.title.text, names: p.data.map(t => t.name),"
        " val: p.data[1].y}; })()"
    )
    assert plot["title"] == "Learning curve: mean absolute error"
    assert plot["names"] == ["train mean absolute error", "validation mean absolute error"]
    assert plot["val"] == pytest.approx([0.9 / epoch for epoch in range(1, 6)])


@pytest.mark.slow
def test_a_submitted_study_is_followed_to_completion(served: Served, page: Page) -> None:
    """A real worker process runs a tiny study while the study page is open."""
    spec = (
        '{"name": "browser-e2e", '
        '"dataset": {"name": "synthetic", "n_samples": 200, "n_features": 6, "n_classes": 3},'
        ' "model": {"hidden_units": [8]},'
        ' "search_space": {"optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},'
        ' "learning_rate": {"type": "float", "low": 0.001, "high": 0.1, "log": true}},'
        ' "sampler": {"name": "random", "seed": 1}, "budget": {"n_trials": 3, "max_epochs": 3}}'
    )
    page.goto(f"{served.url}/?token={TOKEN}")
    page.fill("#spec", spec)
    page.click("#submit")
    page.locator("#submit-result a").click()
    page.wait_for_url("**/studies/*")
    page.evaluate("window.__notReloaded = true")
    worker = subprocess.Popen(
        [sys.executable, "-m", "service.worker", "--device", "cpu", "--exit-when-idle"],
        env={
            **os.environ,
            "HPS_DATABASE_URL": served.database_url,
            "HPS_DATA_DIR": str(served.data_dir),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        expect(page.locator("#facts")).to_contain_text("completed", timeout=240_000)
        _, stderr = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, stderr.decode()[-3000:]
    expect(page.locator("#facts")).to_contain_text("3/3")
    expect(page.locator("#trials tbody tr")).to_have_count(3)
    page.wait_for_function("() => document.getElementById('plot-history').data[1].x.length === 3")
    assert page.evaluate("window.__notReloaded") is True
    screenshot(page, "study-completed")
    with served.db() as session:
        assert session.query(Trial).filter(Trial.state == "running").count() == 0

"""The technique report: effects with bootstrap intervals, sentences no stronger than them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy
import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import transaction
from service.db.models import Study
from tests.api_fixtures import TOKEN, TestClient, seed_study, seed_trial, valid_spec
from tests.test_dashboard_browser import Served, browser, page, served

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

__all__ = ["browser", "page", "served"]  # the dashboard tests' fixtures

pytest_plugins = ["tests.api_fixtures"]


def seeded(db: sessionmaker[Session], adam: float, sgd: float, problems_in_sgd: int = 0) -> int:
    """10 adam and 10 sgd trials with objectives drawn around the given means (σ 0.02)."""
    rng = numpy.random.default_rng(7)
    study = seed_study(db, status="completed", spec=valid_spec(), objective_metric="val_data_loss")
    best: tuple[float, int] | None = None
    for number in range(20):
        optimizer = "adam" if number % 2 == 0 else "sgd"
        value = float(rng.normal(adam if optimizer == "adam" else sgd, 0.02))
        rate = 0.001 if number == 0 else float(10 ** rng.uniform(-4, -1))
        labels = (
            ",vanishing_gradients,"
            if optimizer == "sgd" and number // 2 < problems_in_sgd
            else None
        )
        trial_id = seed_trial(
            db,
            study,
            number,
            value=value,
            params={"optimizer": optimizer, "learning_rate": rate},
            metrics={"test_accuracy": 0.9, "val_data_loss": value},
            problem_labels=labels,
            epochs=3,
        )
        if best is None or value < best[0]:
            best = (value, trial_id)
    assert best is not None
    with transaction(db) as session:
        row = session.get_one(Study, study)
        row.best_value, row.best_trial_id = best
    return study


def report(client: TestClient, study: int) -> dict[str, Any]:
    response = client.get(f"/api/v1/studies/{study}/report")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def technique(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in body["techniques"] if t["parameter"] == name)
    return found


def test_a_clearly_better_choice_is_reported_better_with_an_interval_excluding_zero(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    body = report(client, seeded(db, adam=0.10, sgd=0.30))
    optimizer = technique(body, "optimizer")
    assert [g["label"] for g in optimizer["groups"]] == ["optimizer=adam", "optimizer=sgd"]
    assert [g["n"] for g in optimizer["groups"]] == [10, 10]
    [comparison] = optimizer["comparisons"]
    assert comparison["conclusive"] is True
    low, high = comparison["interval"]
    assert 0 < low < comparison["improvement"] < high
    assert 0.17 < comparison["improvement"] < 0.23
    assert optimizer["sentences"][0].startswith("optimizer=adam beat optimizer=sgd by 0.")
    assert "10 vs 10 trials" in optimizer["sentences"][0]
    assert optimizer["sentences"][0] in body["summary"]
    rate = technique(body, "learning_rate")
    assert rate["kind"] == "numeric"
    assert all(g["label"].startswith("learning_rate in [") for g in rate["groups"])
    assert len(rate["groups"]) == 3
    assert optimizer["importance"] > rate["importance"]  # only the optimizer matters here


def test_no_real_effect_is_not_claimed(client: TestClient, db: sessionmaker[Session]) -> None:
    body = report(client, seeded(db, adam=0.20, sgd=0.20))
    [comparison] = technique(body, "optimizer")["comparisons"]
    assert comparison["conclusive"] is False
    low, high = comparison["interval"]
    assert low < 0 < high
    assert technique(body, "optimizer")["sentences"][0].startswith("not enough trials to tell")
    assert not any("beat" in line for line in body["summary"] if "optimizer" in line)


def test_problems_are_counted_by_choice(client: TestClient, db: sessionmaker[Session]) -> None:
    body = report(client, seeded(db, adam=0.1, sgd=0.3, problems_in_sgd=7))
    optimizer = technique(body, "optimizer")
    assert optimizer["problems"] == [
        {"group": "optimizer=sgd", "label": "vanishing_gradients", "count": 7, "of": 10}
    ]
    assert "7 of 10 optimizer=sgd trials showed vanishing gradients" in optimizer["sentences"]


def test_the_best_configuration_and_keras_defaults(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    body = report(client, seeded(db, adam=0.1, sgd=0.3))
    best = body["best"]
    assert best["params"]["optimizer"] == "adam"
    assert best["test_metrics"] == {"test_accuracy": 0.9}
    assert body["keras_defaults"] is not None  # trial 0 ran Keras's defaults (tpe)
    assert "Keras's defaults (trial 0" in body["keras_defaults"]
    assert client.get("/api/v1/studies/999999/report").status_code == 404


def test_hpsearch_report_writes_markdown_and_json(
    url: str, db: sessionmaker[Session], tmp_path: Path
) -> None:
    from tests.test_cli_client import hps

    study = seeded(db, adam=0.1, sgd=0.3)
    result = hps(url, "report", str(study))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"# Study {study}: seeded")
    assert "- optimizer=adam beat optimizer=sgd by" in result.stdout
    assert "| optimizer=adam | 10 |" in result.stdout
    out = tmp_path / "report.json"
    result = hps(url, "report", str(study), "--format", "json", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["study_id"] == study


@pytest.mark.browser
def test_the_html_report_opens_offline_with_its_plots_and_no_error(
    url: str, db: sessionmaker[Session], tmp_path: Path, browser: Browser
) -> None:
    from tests.test_cli_client import hps

    study = seeded(db, adam=0.1, sgd=0.3)
    out = tmp_path / "report.html"
    result = hps(url, "report", str(study), "--out", str(out))  # html from the suffix
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!doctype html>")
    page = browser.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(out.as_uri())
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length === 2")
        assert "optimizer=adam beat optimizer=sgd" in page.inner_text("body")
    finally:
        page.close()
    assert requests == [out.as_uri()]  # nothing but the file itself
    assert errors == []


def test_a_study_whose_spec_no_longer_validates_is_a_409_not_a_500(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study = seed_study(db, spec={"name": "old", "search_space": {"x": {"type": "nope"}}})
    response = client.get(f"/api/v1/studies/{study}/report")
    assert response.status_code == 409
    assert "cannot be reported" in response.text


@pytest.mark.browser
def test_the_dashboard_report_page_draws_a_chart_per_technique(served: Served, page: Page) -> None:
    study = seeded(served.db, adam=0.1, sgd=0.3)
    page.goto(f"{served.url}/studies/{study}?token={TOKEN}")
    page.click("#report-link")
    page.wait_for_function("() => performance.getEntriesByName('hps:report').length > 0")
    assert page.url.endswith(f"/studies/{study}/report")
    assert page.locator(".technique .js-plotly-plot").count() == 2
    optimizer = page.locator(".technique[data-parameter=optimizer] .sentences li").first
    assert optimizer.inner_text().startswith("optimizer=adam beat optimizer=sgd by")
    assert "optimizer=adam beat optimizer=sgd" in page.locator("#summary").inner_text()
    assert not page.locator("#best-box").is_hidden()


def test_the_bootstrap_of_large_groups_is_drawn_in_chunks_with_the_same_answer() -> None:
    from service.studies.report import BOOTSTRAP_RESAMPLES, _compare, _resampled_means

    rng = numpy.random.default_rng(3)
    good, bad = rng.normal(0.10, 0.05, 3000), rng.normal(0.12, 0.05, 3000)
    means = _resampled_means(numpy.random.default_rng(0), good)
    assert means.shape == (BOOTSTRAP_RESAMPLES,)
    assert abs(float(means.mean()) - float(good.mean())) < 0.001
    comparison = _compare("a", "b", list(good), list(bad), sign=-1.0)  # minimizing
    assert comparison.conclusive
    assert comparison.interval[0] < 0.02 < comparison.interval[1]  # the true difference


def test_beyond_the_exact_bootstrap_the_normal_one_gives_the_same_interval() -> None:
    """The central-limit shortcut for large groups against the drawn bootstrap of the same
    values (skewed ones, as objective values are)."""
    from service.studies import report

    rng = numpy.random.default_rng(5)
    values = rng.lognormal(-2.0, 0.6, report.EXACT_BOOTSTRAP_UP_TO + 1000)
    shortcut = report._resampled_means(numpy.random.default_rng(0), values)
    drawn = numpy.concatenate(
        [
            rng.choice(values, size=(100, len(values))).mean(axis=1)
            for _ in range(report.BOOTSTRAP_RESAMPLES // 100)
        ]
    )
    spread = float(numpy.percentile(drawn, 97.5) - numpy.percentile(drawn, 2.5))
    for q in (2.5, 50, 97.5):
        gap = abs(float(numpy.percentile(shortcut, q) - numpy.percentile(drawn, q)))
        assert gap < 0.1 * spread, q


def test_an_ended_study_s_report_is_computed_once_until_the_study_changes(
    client: TestClient, db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.studies import report as module

    study = seeded(db, adam=0.10, sgd=0.20)
    built: list[int] = []
    original = module._build_report

    def counting(session: Session, study_id: int) -> Any:
        built.append(study_id)
        return original(session, study_id)

    monkeypatch.setattr(module, "_build_report", counting)
    first = report(client, study)
    assert report(client, study) == first
    assert built == [study]  # the second read came from the kept report
    with transaction(db) as session:  # any write to the study (an extend, a rename) moves on
        row = session.get_one(Study, study)
        row.status = "running"
    report(client, study)
    report(client, study)
    assert built == [study, study, study]  # a running study's report is computed each time

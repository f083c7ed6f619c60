"""Studies side by side (GET /api/v1/compare), SQLite and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.api_fixtures import TOKEN, TestClient, seed_study, valid_spec
from tests.test_dashboard_browser import Served, browser, page, screenshot, served
from tests.test_report import seeded

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["browser", "page", "served"]  # the dashboard tests' fixtures

pytest_plugins = ["tests.api_fixtures"]


def test_two_studies_of_one_dataset_side_by_side(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    better, worse = seeded(db, adam=0.1, sgd=0.3), seeded(db, adam=0.2, sgd=0.4)
    response = client.get("/api/v1/compare", params={"studies": [worse, better]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["id"] for s in body["studies"]] == [worse, better]  # in the order asked
    by_id = {s["id"]: s for s in body["studies"]}
    assert by_id[better]["best_value"] < by_id[worse]["best_value"]
    assert by_id[better]["leaders"]["optimizer"] == "optimizer=adam"
    assert [p["epoch"] for p in by_id[better]["best_curve"]] == [1, 2, 3]
    assert by_id[better]["best_curve"][0]["value"] == 1.2  # the seeded val_data_loss of epoch 1
    assert body["sentences"][0].startswith(f"study {better} 'seeded' has the best val_data_loss")
    assert "every study found optimizer=adam best" in body["sentences"]


def test_studies_of_other_data_unknown_ids_and_a_single_study_are_refused(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    digits = seeded(db, adam=0.1, sgd=0.3)
    other = seed_study(db, spec=valid_spec(dataset={"name": "synthetic"}))
    response = client.get("/api/v1/compare", params={"studies": [digits, other]})
    assert response.status_code == 422
    [issue] = response.json()["detail"]
    assert issue["loc"] == ["query", "studies", 1]
    assert "trained on other data" in issue["msg"]
    unknown = client.get("/api/v1/compare", params={"studies": [digits, 999_999]})
    assert unknown.status_code == 422
    assert "no study has id 999999" in unknown.text
    assert client.get("/api/v1/compare", params={"studies": [digits]}).status_code == 422
    assert client.get("/api/v1/compare", params={"studies": [digits, digits]}).status_code == 422


@pytest.mark.browser
def test_the_dashboard_compares_the_studies_ticked_on_the_studies_page(
    served: Served, page: Page
) -> None:
    better, worse = seeded(served.db, adam=0.1, sgd=0.3), seeded(served.db, adam=0.2, sgd=0.4)
    page.goto(f"{served.url}/?token={TOKEN}")
    page.wait_for_selector(f"tr[data-study='{worse}'] input.choose")
    assert page.locator("#compare").is_disabled()
    page.check(f"tr[data-study='{worse}'] input.choose")
    page.check(f"tr[data-study='{better}'] input.choose")
    page.click("#compare")
    page.wait_for_function("() => performance.getEntriesByName('hps:compare').length > 0")
    assert page.url.endswith(f"/compare?studies={min(better, worse)}&studies={max(better, worse)}")
    headers = page.locator("#compared thead th[data-study]")
    assert headers.count() == 2
    table = page.locator("#compared tbody").inner_text()
    assert "best optimizer (report)\toptimizer=adam\toptimizer=adam" in table
    assert page.evaluate("document.getElementById('plot-curves').data.length") == 2
    sentences = page.locator("#sentences").inner_text()
    assert f"study {better} 'seeded' has the best val_data_loss" in sentences
    screenshot(page, "compare")

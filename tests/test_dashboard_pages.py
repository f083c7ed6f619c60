"""The dashboard's pages and assets over HTTP (no browser): served without a token, offline
(a partial Plotly bundle shipped in the package), and never in the way of the API's own paths."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from service.dashboard import PARTIAL_PLOTLY, STATIC_DIR, full_plotly_js
from tests.api_fixtures import TestClient

pytest_plugins = ["tests.api_fixtures"]


def test_pages_need_no_token_and_hold_no_data(anonymous: TestClient) -> None:
    for path in ("/", "/studies/1", "/studies/1/trials/0"):
        response = anonymous.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert 'type="module"' in response.text
        assert 'id="token-dialog"' in response.text  # the shared header, included
        assert "<!--#include" not in response.text
    assert anonymous.get("/studies/not-a-number").status_code == 422


def test_every_asset_a_page_names_is_served_locally(anonymous: TestClient) -> None:
    for page in ("index.html", "study.html", "trial.html"):
        html = (STATIC_DIR / page).read_text()
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            assert anonymous.get(asset).status_code == 200, asset
        assert "http://" not in html
        assert "https://" not in html
    for script in STATIC_DIR.glob("*.js"):
        for imported in re.findall(r'from "(/static/[^"]+)"', script.read_text()):
            assert (STATIC_DIR / Path(imported).name).is_file(), imported


def test_plotly_is_the_partial_bundle_compressed_and_cached(anonymous: TestClient) -> None:
    plain = anonymous.get("/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert plain.content == PARTIAL_PLOTLY.read_bytes()
    assert len(plain.content) < len(full_plotly_js()) / 2
    raw = anonymous.stream("GET", "/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    with raw as response:
        assert response.headers["content-encoding"] == "gzip"
        body = b"".join(response.iter_raw())
    assert gzip.decompress(body) == plain.content
    assert len(body) < len(plain.content) / 2
    etag = plain.headers["etag"]
    assert (
        anonymous.get("/static/plotly.min.js", headers={"If-None-Match": etag}).status_code == 304
    )


def test_the_partial_bundle_is_the_plotly_js_of_the_installed_package() -> None:
    """Rebuild plotly_bundle/ (its README) when the `plotly` package moves to a new plotly.js."""
    header = full_plotly_js()[:200].decode()
    version = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", header)
    assert version is not None, header
    assert f'version="{version.group(1)}"'.encode() in PARTIAL_PLOTLY.read_bytes()


def test_examples_are_offered(anonymous: TestClient) -> None:
    examples = anonymous.get("/static/examples.json").json()
    names = [example["name"] for example in examples]
    assert "digits-cnn" in names
    assert all(isinstance(example["spec"], dict) for example in examples)


def test_the_api_paths_stay_the_apis(client: TestClient, anonymous: TestClient) -> None:
    assert anonymous.get("/healthz").json()["status"] == "ok"
    assert anonymous.get("/docs").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/v1/studies").json()["total"] == 0
    assert anonymous.get("/api/v1/studies").status_code == 401
    assert anonymous.get("/static/../pyproject.toml").status_code == 404

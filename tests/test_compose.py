"""docker-compose.yml, checked by parsing it (no Docker engine runs on these machines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[1]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_services_and_their_order() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", "api", "worker"}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["migrate"]["command"] == ["hpsearch", "db", "upgrade"]
    assert services["worker"]["command"][:2] == ["hpsearch", "worker"]
    assert services["api"]["command"][:2] == ["hpsearch", "serve"]


def test_every_hpsearch_service_shares_one_database_and_data_volume() -> None:
    services = compose()["services"]
    urls = {
        services[name]["environment"]["HPS_DATABASE_URL"] for name in ("migrate", "api", "worker")
    }
    assert len(urls) == 1
    url = urls.pop()
    assert url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in url
    assert "hpsdata:/data" in services["api"]["volumes"]
    assert "hpsdata:/data" in services["worker"]["volumes"]
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert set(compose()["volumes"]) == {"pgdata", "hpsdata"}


def test_a_token_is_required_and_health_is_checked() -> None:
    services = compose()["services"]
    assert services["api"]["environment"]["HPS_API_TOKEN"].startswith("${HPS_API_TOKEN:?")
    assert "healthcheck" in services["api"]
    assert "healthcheck" in services["postgres"]
    assert services["worker"]["stop_grace_period"]


def test_the_image_installs_torch_before_the_project() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.index('pip install "torch==') < dockerfile.index(
        'pip install -e ".[s3]"'
    )  # S3 for clusters
    assert "COPY migrations" in dockerfile

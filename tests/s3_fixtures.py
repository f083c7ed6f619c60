"""A local S3-compatible server for the object-store tests: moto's (`moto_server`, from the
dev dependencies), run as a real process on a free port, once per test session; each test gets
a bucket of its own.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.api_fixtures import free_port
from tests.conftest import require

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "hpsearch-test",
    "AWS_SECRET_ACCESS_KEY": "hpsearch-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class Bucket:
    endpoint: str
    name: str
    client: Any

    @property
    def url(self) -> str:
        return f"s3://{self.name}/hps"

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=f"hps/{prefix}")
        return sorted(item["Key"].removeprefix("hps/") for item in listed.get("Contents", []))

    def read(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.name, Key=f"hps/{key}")["Body"].read()
        return body

    def env(self) -> dict[str, str]:
        """What a worker process needs to use the bucket."""
        return {**CREDENTIALS, "HPS_ARTIFACT_URL": self.url, "HPS_S3_ENDPOINT_URL": self.endpoint}


def _moto_server() -> str | None:
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.exists() else shutil.which("moto_server")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    command = _moto_server()
    require(command is not None, "moto_server is not installed (pip install 'moto[server]')")
    assert command is not None
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [command, "-H", "127.0.0.1", "-p", str(port)], stdout=output, stderr=output
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(endpoint, server, log)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_until_up(endpoint: str, server: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto_server exited: {log.read_text()}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer at {endpoint} within 30 s")


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A fresh bucket on the local server; this process's AWS credentials point at it."""
    import boto3

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    name = f"hps-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(s3_endpoint, name, client)


__all__ = ["CREDENTIALS", "Bucket", "bucket", "s3_endpoint"]

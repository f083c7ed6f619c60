"""Uploads over the API: stored under a generated name, loaded before they are recorded,
size-limited while they stream in; and used by a study spec."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message, Scope

from service.api import create_app
from service.config import Settings
from service.db.models import Dataset
from tests.api_fixtures import AUTH, TestClient, make_settings, valid_spec

pytest_plugins = ["tests.api_fixtures"]

DATASETS = "/api/v1/datasets"


def make_csv(rows: int = 60, *, bad_cell: str | None = None) -> bytes:
    rng = np.random.default_rng(0)
    lines = ["a,b,c,label"]
    for i in range(rows):
        a, b, c = rng.normal(size=3)
        lines.append(f"{a:.4f},{b:.4f},{c:.4f},{'xyz'[i % 3]}")
    if bad_cell is not None:
        lines[5] = f"{bad_cell},0.1,0.2,x"
    return ("\n".join(lines) + "\n").encode()


def make_npz(rows: int = 40) -> bytes:
    buffer = io.BytesIO()
    X = np.random.default_rng(1).normal(size=(rows, 2, 3)).astype(np.float32)
    np.savez(buffer, X=X, y=np.arange(rows) % 2)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray | None = None) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 2)) if array is None else array)
    return buffer.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def uploads(settings: Settings) -> list[Path]:
    return sorted(settings.upload_dir.glob("*")) if settings.upload_dir.exists() else []


def dataset_rows(db: sessionmaker[Session]) -> int:
    with db() as session:
        return session.scalar(select(func.count()).select_from(Dataset)) or 0


def test_upload_csv(client: TestClient, api_settings: Settings, db: sessionmaker[Session]) -> None:
    content = make_csv()
    response = client.post(
        DATASETS,
        files={"file": ("../../etc/My Data.CSV", content, "text/csv")},
        data={"target": "label"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["format"], body["n_rows"], body["n_features"], body["n_classes"]) == (
        "csv", 60, 3, 3,
    )  # fmt: skip
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert (body["size_bytes"], body["target"], body["name"]) == (
        len(content),
        "label",
        "My Data.CSV",
    )
    assert "path" not in body
    (stored,) = uploads(api_settings)
    assert stored.read_bytes() == content
    assert stored.suffix == ".csv"
    assert "My Data" not in stored.name  # the client's name is never a path here
    with db() as session:
        row = session.get(Dataset, body["id"])
        assert row is not None
        assert Path(row.path) == stored.resolve()


def test_upload_npz_and_list(client: TestClient) -> None:
    response = client.post(
        DATASETS, files={"file": ("images.npz", make_npz(), "application/octet-stream")},
        data={"name": "tiny images"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["format"], body["n_rows"], body["n_features"], body["n_classes"]) == (
        "npz", 40, 6, 2,
    )  # fmt: skip
    assert (body["name"], body["target"]) == ("tiny images", None)
    client.post(
        DATASETS, files={"file": ("t.csv", make_csv(), "text/csv")}, data={"target": "label"}
    )
    listed = client.get(DATASETS, params={"limit": 1}).json()
    assert (listed["total"], len(listed["items"]), listed["items"][0]["format"]) == (2, 1, "csv")


@pytest.mark.parametrize(
    ("filename", "content", "form", "loc", "says"),
    [
        ("bad.csv", make_csv(bad_cell="abc"), {"target": "label"}, "file", "'abc' is not a number"),
        ("t.csv", make_csv(), {"target": "klass"}, "file", "no target column 'klass'"),
        ("t.csv", make_csv(), {}, "target", "needs 'target'"),
        ("t.npz", make_npz(), {"target": "y"}, "target", "for CSV files"),
        ("t.npz", b"not a zip", {}, "file", "is not a zip archive"),
        ("t.npz", npy_bytes(), {}, "file", "a single .npy file is not an .npz"),
        (
            "t.npz",
            zip_of({"X.npy": b"not an array", "y.npy": npy_bytes()}),
            {},
            "file",
            "X is not a .npy array",
        ),
        ("t.npz", zip_of({"X.npy": npy_bytes()}), {}, "file", "lacks arrays ['y']"),
        ("t.txt", make_csv(), {"target": "label"}, "file", "must be a .csv or .npz"),
        ("one.csv", b"a,label\n1,x\n2,x\n3,x\n4,x\n5,x\n", {"target": "label"}, "file", "class"),
    ],
)
def test_bad_uploads_are_422_and_leave_nothing_behind(
    client: TestClient,
    api_settings: Settings,
    db: sessionmaker[Session],
    filename: str,
    content: bytes,
    form: dict[str, str],
    loc: str,
    says: str,
) -> None:
    response = client.post(DATASETS, files={"file": (filename, content)}, data=form)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", loc]
    assert says in error["msg"]
    assert uploads(api_settings) == []
    assert dataset_rows(db) == 0


def test_a_small_npz_that_unpacks_to_gigabytes_is_refused_from_its_headers(
    migrated_database_url: str, tmp_path: Path, db: sessionmaker[Session]
) -> None:
    buffer = io.BytesIO()
    # 8 GB of zeros once unpacked, a few kilobytes compressed: never unpacked here
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f8", "fortran_order": False, "shape": (1_000_000, 1000)}
            )
            row = np.zeros(1000).tobytes()
            for _ in range(1000):  # only the first rows: the header is what is read
                member.write(row)
        archive.writestr("y.npy", npy_bytes(np.zeros(1_000_000)))
    content = buffer.getvalue()
    assert len(content) < 200_000
    settings = make_settings(migrated_database_url, tmp_path / "data", max_dataset_bytes=10**9)
    with TestClient(create_app(settings), headers=AUTH) as client:
        response = client.post(DATASETS, files={"file": ("bomb.npz", content)})
    assert response.status_code == 422, response.text
    message = response.json()["detail"][0]["msg"]
    assert "unpacks to 8,008,000,000 bytes" in message
    assert "at most 1,000,000,000" in message
    assert uploads(settings) == []
    assert dataset_rows(db) == 0


def test_upload_without_a_file_is_422(client: TestClient) -> None:
    response = client.post(DATASETS, data={"target": "label"}, files={"other": ("x", b"1")})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


@pytest.fixture
def small_limit(
    migrated_database_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, Settings]]:
    settings = make_settings(migrated_database_url, tmp_path / "data", max_upload_bytes=2000)
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client, settings


def test_too_large_uploads_are_413(
    small_limit: tuple[TestClient, Settings], db: sessionmaker[Session]
) -> None:
    client, settings = small_limit
    just_over = make_csv(rows=100)  # within the form's slack, over the file limit
    assert 2000 < len(just_over) < 64 * 1024
    far_over = make_csv(rows=5000)  # refused on its Content-Length, before it is read
    for content in (just_over, far_over):
        response = client.post(
            DATASETS, files={"file": ("big.csv", content)}, data={"target": "label"}
        )
        assert response.status_code == 413, response.text
        assert "2000 bytes" in response.json()["detail"]
    assert uploads(settings) == []
    assert dataset_rows(db) == 0
    ok = client.post(
        DATASETS, files={"file": ("ok.csv", make_csv(rows=30))}, data={"target": "label"}
    )
    assert ok.status_code == 201


def test_a_streamed_body_is_cut_off_at_the_limit(
    small_limit: tuple[TestClient, Settings],
) -> None:
    """No Content-Length (chunked): the budget is counted while the body arrives, and the
    app stops reading. Driven through ASGI directly: the TestClient buffers request bodies."""
    client, settings = small_limit
    boundary = "hpsboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="target"\r\n\r\nlabel\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    chunks = [head, *[b"1.0,2.0,3.0,x\n" * 73] * 1000, f"\r\n--{boundary}--\r\n".encode()]
    pulled = 0
    statuses: list[int] = []

    async def receive() -> Message:
        nonlocal pulled
        if pulled == len(chunks):
            return {"type": "http.disconnect"}
        pulled += 1
        return {
            "type": "http.request",
            "body": chunks[pulled - 1],
            "more_body": pulled < len(chunks),
        }

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", AUTH["Authorization"].encode()),
        (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
        (b"transfer-encoding", b"chunked"),
    ]
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": DATASETS, "raw_path": DATASETS.encode(), "root_path": "",
        "query_string": b"", "headers": headers, "client": ("test", 1),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip
    anyio.run(client.app, scope, receive, send)
    assert statuses == [413]
    assert pulled < 100  # 2000 bytes + 64 kB of slack: it read about 66 chunks of 1 kB
    assert uploads(settings) == []


def test_a_spec_may_use_an_upload_by_id(client: TestClient) -> None:
    dataset = client.post(
        DATASETS, files={"file": ("t.csv", make_csv())}, data={"target": "label"}
    ).json()
    spec = valid_spec(dataset={"id": dataset["id"], "validation_split": 0.25})
    response = client.post("/api/v1/studies", json=spec)
    assert response.status_code == 201, response.text
    stored = client.get(f"/api/v1/studies/{response.json()['id']}").json()["spec"]
    assert stored["dataset"]["id"] == dataset["id"]
    unknown = client.post("/api/v1/studies", json=valid_spec(dataset={"id": dataset["id"] + 1}))
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "dataset", "id"]


def test_an_upload_is_deleted_with_its_file_unless_an_active_study_uses_it(
    client: TestClient, api_settings: Settings, db: sessionmaker[Session]
) -> None:
    used = client.post(DATASETS, files={"file": ("u.csv", make_csv())}, data={"target": "label"})
    spare = client.post(DATASETS, files={"file": ("s.csv", make_csv())}, data={"target": "label"})
    used_id, spare_id = used.json()["id"], spare.json()["id"]
    study = client.post("/api/v1/studies", json=valid_spec(dataset={"id": used_id})).json()
    assert len(uploads(api_settings)) == 2
    refused = client.delete(f"{DATASETS}/{used_id}")
    assert refused.status_code == 409
    assert f"used by study {study['id']} 'lr-search' (queued)" in refused.json()["detail"]
    assert client.delete(f"{DATASETS}/{spare_id}").status_code == 204
    assert len(uploads(api_settings)) == 1  # its file went with it
    assert dataset_rows(db) == 1
    assert client.delete(f"{DATASETS}/{spare_id}").status_code == 404
    assert client.post(f"/api/v1/studies/{study['id']}/cancel").status_code == 200
    assert client.delete(f"{DATASETS}/{used_id}").status_code == 204  # its study has ended
    assert uploads(api_settings) == []
    assert client.delete(f"{DATASETS}/{10**30}").status_code == 422

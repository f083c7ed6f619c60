"""The API over an object store (HPS_ARTIFACT_URL=s3://...): uploads go to the bucket and
leave nothing on the server's disk, checkpoints stream from it behind the token, deleting a
study or an upload removes its objects, and a store that fails is a 503 that says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.api import create_app
from service.config import Settings
from service.db.models import Dataset, Trial
from tests.api_fixtures import AUTH, TestClient, make_settings, seed_study, seed_trial
from tests.s3_fixtures import Bucket
from tests.test_api_datasets import make_npz

pytest_plugins = ["tests.api_fixtures", "tests.s3_fixtures"]


@pytest.fixture
def s3_settings(migrated_database_url: str, tmp_path: Path, bucket: Bucket) -> Settings:
    return make_settings(
        migrated_database_url,
        tmp_path / "data",
        artifact_url=bucket.url,
        s3_endpoint_url=bucket.endpoint,
    )


@pytest.fixture
def s3_client(s3_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(s3_settings), headers=AUTH) as test_client:
        yield test_client


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def test_an_upload_lives_in_the_bucket_and_goes_with_delete(
    s3_client: TestClient, s3_settings: Settings, bucket: Bucket, db: sessionmaker[Session]
) -> None:
    content = make_npz()
    response = s3_client.post("/api/v1/datasets", files={"file": ("d.npz", content)})
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    (key,) = bucket.keys("uploads/")
    assert bucket.read(key) == content
    assert files_under(s3_settings.upload_dir) == []  # the staged copy is gone
    with db() as session:
        assert session.get_one(Dataset, dataset_id).path == f"{bucket.url}/{key}"
    assert s3_client.delete(f"/api/v1/datasets/{dataset_id}").status_code == 204
    assert bucket.keys("uploads/") == []


def test_a_refused_upload_leaves_no_object(s3_client: TestClient, bucket: Bucket) -> None:
    response = s3_client.post("/api/v1/datasets", files={"file": ("d.npz", b"not a zip")})
    assert response.status_code == 422
    assert bucket.keys() == []


def _point_checkpoint(db: sessionmaker[Session], study: int, number: int, path: str) -> None:
    with db.begin() as session:
        session.query(Trial).filter_by(study_id=study, number=number).one().checkpoint_path = path


def test_a_checkpoint_streams_from_the_bucket_behind_the_token(
    s3_client: TestClient, bucket: Bucket, db: sessionmaker[Session]
) -> None:
    study_id = seed_study(db)
    seed_trial(db, study_id, 0)
    weights = bytes(range(256)) * 8192  # 2 MB: several chunks
    key = f"checkpoints/study-{study_id}/trial-0/best.ckpt"
    bucket.client.put_object(Bucket=bucket.name, Key=f"hps/{key}", Body=weights)
    _point_checkpoint(db, study_id, 0, f"{bucket.url}/{key}")
    path = f"/api/v1/studies/{study_id}/trials/0/checkpoint"
    response = s3_client.get(path)
    assert response.status_code == 200
    assert response.content == weights
    assert response.headers["content-length"] == str(len(weights))
    assert f"study-{study_id}-trial-0.ckpt" in response.headers["content-disposition"]
    assert TestClient(s3_client.app).get(path).status_code == 401  # weights need the token

    _point_checkpoint(db, study_id, 0, f"s3://another-bucket/hps/{key}")
    refused = s3_client.get(path)
    assert refused.status_code == 403
    assert "outside the server's artifact store" in refused.json()["detail"]
    _point_checkpoint(db, study_id, 0, f"{bucket.url}/checkpoints/study-{study_id}/gone.ckpt")
    assert s3_client.get(path).status_code == 404


def test_deleting_a_study_deletes_its_objects_only(
    s3_client: TestClient, bucket: Bucket, db: sessionmaker[Session]
) -> None:
    doomed, kept = seed_study(db, status="completed"), seed_study(db, status="completed")
    for study_id in (doomed, kept):
        for name in ("best.ckpt", "last.ckpt"):
            key = f"hps/checkpoints/study-{study_id}/trial-0/{name}"
            bucket.client.put_object(Bucket=bucket.name, Key=key, Body=b"w")
    assert s3_client.delete(f"/api/v1/studies/{doomed}").status_code == 204
    assert bucket.keys("checkpoints/") == [
        f"checkpoints/study-{kept}/trial-0/best.ckpt",
        f"checkpoints/study-{kept}/trial-0/last.ckpt",
    ]


def test_a_failing_store_is_a_503_naming_it(
    s3_client: TestClient, bucket: Bucket, db: sessionmaker[Session]
) -> None:
    study_id = seed_study(db)
    seed_trial(db, study_id, 0)
    _point_checkpoint(db, study_id, 0, f"{bucket.url}/checkpoints/study-{study_id}/x.ckpt")
    bucket.client.delete_bucket(Bucket=bucket.name)  # the store loses its bucket under us
    response = s3_client.get(f"/api/v1/studies/{study_id}/trials/0/checkpoint")
    assert response.status_code == 503
    assert "artifact store is unavailable" in response.json()["detail"]
    assert "NoSuchBucket" in response.json()["detail"]


def test_a_server_whose_bucket_is_missing_does_not_start(
    migrated_database_url: str, tmp_path: Path, bucket: Bucket
) -> None:
    settings = make_settings(
        migrated_database_url,
        tmp_path / "data",
        artifact_url=f"s3://{bucket.name}-missing",
        s3_endpoint_url=bucket.endpoint,
    )
    with (
        pytest.raises(Exception, match=f"bucket '{bucket.name}-missing' does not exist"),
        TestClient(create_app(settings)),
    ):
        pass

"""The artifact store's contract, over the local store and an S3 server (moto's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.artifacts import (
    ArtifactStore,
    ArtifactStoreError,
    LocalStore,
    artifact_store,
    checkpoint_key,
    study_checkpoints_prefix,
)
from service.artifacts._s3 import S3Store, parse_s3_url
from service.config import Settings
from tests.s3_fixtures import Bucket

pytest_plugins = ["tests.s3_fixtures"]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "data")
    bucket: Bucket = request.getfixturevalue("bucket")
    return S3Store.from_url(bucket.url, bucket.endpoint)


def read(body_store: ArtifactStore, location: str) -> bytes:
    body = body_store.open(location)
    assert body is not None
    if body.path is not None:
        return body.path.read_bytes()
    assert body.chunks is not None
    content = b"".join(body.chunks)
    assert len(content) == body.size
    return content


def a_file(tmp_path: Path, content: bytes, name: str = "source.bin") -> Path:
    path = tmp_path / "scratch" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_a_published_file_reads_back_and_fetches(store: ArtifactStore, tmp_path: Path) -> None:
    content = bytes(range(256)) * 5000  # 1.28 MB: more than one read chunk
    key = checkpoint_key(3, 0, "best.ckpt")
    location = store.publish(a_file(tmp_path, content), key)
    assert store.key_of(location) == key
    assert read(store, location) == content
    fetched = tmp_path / "elsewhere" / "best.ckpt"
    assert store.fetch(location, fetched)
    assert fetched.read_bytes() == content
    assert [p.name for p in fetched.parent.iterdir()] == ["best.ckpt"]  # no partial file left


def test_publishing_again_replaces_the_file(store: ArtifactStore, tmp_path: Path) -> None:
    key = checkpoint_key(1, 2, "last.ckpt")
    store.publish(a_file(tmp_path, b"epoch 1"), key)
    location = store.publish(a_file(tmp_path, b"epoch 2", "newer.bin"), key)
    assert read(store, location) == b"epoch 2"


def test_missing_files_are_none_and_false_not_errors(store: ArtifactStore, tmp_path: Path) -> None:
    location = store.location(checkpoint_key(9, 9, "best.ckpt"))
    assert store.open(location) is None
    target = tmp_path / "fetched" / "best.ckpt"
    assert store.fetch(location, target) is False
    assert not target.exists()
    store.delete(location)  # gone already: no error
    assert store.delete_prefix(study_checkpoints_prefix(9)) == 0


def test_delete_and_delete_prefix_remove_exactly_theirs(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = a_file(tmp_path, b"w")
    kept = store.publish(source, checkpoint_key(10, 0, "best.ckpt"))
    for number in range(3):
        for name in ("best.ckpt", "last.ckpt"):
            store.publish(source, checkpoint_key(1, number, name))
    single = store.location(checkpoint_key(1, 0, "best.ckpt"))
    store.delete(single)
    assert store.open(single) is None
    assert store.delete_prefix(study_checkpoints_prefix(1)) == 5
    assert store.open(store.location(checkpoint_key(1, 2, "last.ckpt"))) is None
    assert read(store, kept) == b"w"  # study 10 is not study 1's prefix


def test_locations_outside_the_store_have_no_key(store: ArtifactStore, tmp_path: Path) -> None:
    outside = a_file(tmp_path, b"secret")
    inside = store.location("uploads/a.npz")
    assert store.key_of(str(outside)) is None
    assert store.key_of("/etc/passwd") is None
    assert store.key_of("s3://some-other-bucket/hps/uploads/a.npz") is None
    assert store.key_of(inside.replace("uploads/a.npz", "uploads/../../x")) is None


def test_a_local_link_out_of_the_data_dir_has_no_key(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    secret = a_file(tmp_path, b"secret")
    link = tmp_path / "data" / "checkpoints" / "best.ckpt"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    assert store.key_of(str(link)) is None


def test_a_local_fetch_links_and_later_writes_leave_the_source_alone(tmp_path: Path) -> None:
    """A retry resumes from its original's files: the trainer replaces its own copies
    (os.replace), which must not change the original trial's."""
    store = LocalStore(tmp_path / "data")
    original = store.publish(a_file(tmp_path, b"epoch 2"), checkpoint_key(1, 0, "last.ckpt"))
    retry = tmp_path / "data" / "checkpoints" / "study-1" / "trial-5" / "last.ckpt"
    assert store.fetch(original, retry)
    replacement = a_file(tmp_path, b"epoch 6", "new")
    replacement.replace(retry)
    assert Path(original).read_bytes() == b"epoch 2"


def test_s3_urls_parse_and_bad_ones_say_what_is_expected() -> None:
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    with pytest.raises(ArtifactStoreError, match="s3://bucket"):
        parse_s3_url("s3:///nobucket")
    with pytest.raises(ValidationError, match="artifact_url"):
        Settings(artifact_url="gs://bucket/x")


def test_a_missing_bucket_is_one_clear_line(bucket: Bucket) -> None:
    store = S3Store.from_url(f"s3://{bucket.name}-absent/x", bucket.endpoint)
    with pytest.raises(ArtifactStoreError, match=f"bucket '{bucket.name}-absent' does not exist"):
        store.check()
    S3Store.from_url(bucket.url, bucket.endpoint).check()  # the real one is fine


def test_settings_choose_the_store(bucket: Bucket, tmp_path: Path) -> None:
    local = artifact_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalStore)
    assert not local.remote
    remote = artifact_store(
        Settings(data_dir=tmp_path, artifact_url=bucket.url, s3_endpoint_url=bucket.endpoint)
    )
    assert remote.remote
    assert remote.describe() == f"{bucket.url}/ at {bucket.endpoint}"
    same = artifact_store(
        Settings(data_dir=tmp_path, artifact_url=bucket.url, s3_endpoint_url=bucket.endpoint)
    )
    assert same is remote  # one boto3 client per store and process

"""Where checkpoints and uploaded data sets live: files under `HPS_DATA_DIR` (the default), or
an S3-compatible object store (`HPS_ARTIFACT_URL=s3://bucket/prefix`), so that workers on many
hosts need no shared file system.

Both stores name a file by a *key* (`checkpoints/study-3/trial-0/best.ckpt`,
`uploads/<uuid>.npz`) and record it in the database by its *location* (a path, or an
`s3://` URL). Workers always train into a local directory; with an object store they publish
what the trainer wrote there and fetch a retry's resume checkpoint from it.
"""

from __future__ import annotations

from functools import lru_cache

from service.artifacts._base import (
    ArtifactBody,
    ArtifactStore,
    ArtifactStoreError,
    checkpoint_key,
    study_checkpoints_prefix,
    upload_key,
)
from service.artifacts._local import LocalStore
from service.config import Settings


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store `settings` name: S3 when `artifact_url` is set, else files in `data_dir`."""
    if settings.artifact_url is None:
        return LocalStore(settings.data_dir)
    return _s3_store(settings.artifact_url, settings.s3_endpoint_url)


@lru_cache(maxsize=4)
def _s3_store(url: str, endpoint_url: str | None) -> ArtifactStore:
    """One client per store and process: making a boto3 client costs tens of milliseconds,
    and a client is safe to share among threads."""
    from service.artifacts._s3 import S3Store  # boto3 is an optional dependency

    return S3Store.from_url(url, endpoint_url)


__all__ = [
    "ArtifactBody",
    "ArtifactStore",
    "ArtifactStoreError",
    "LocalStore",
    "artifact_store",
    "checkpoint_key",
    "study_checkpoints_prefix",
    "upload_key",
]

"""An S3-compatible object store (AWS S3, MinIO, Ceph, GCS's S3 API) through boto3.

Credentials and region come from boto3's usual chain (`AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY`, a profile, an instance role); `HPS_S3_ENDPOINT_URL` points at a
server other than AWS's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

from service.artifacts._base import ArtifactBody, ArtifactStore, ArtifactStoreError

_CHUNK = 1024 * 1024
_DELETE_BATCH = 1000  # S3's limit per DeleteObjects request


class S3Store(ArtifactStore):
    remote = True

    def __init__(self, bucket: str, prefix: str, client: Any, endpoint_url: str | None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client
        self.endpoint_url = endpoint_url

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None) -> S3Store:
        bucket, prefix = parse_s3_url(url)
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ArtifactStoreError(
                f"HPS_ARTIFACT_URL={url} names an S3 store, which needs boto3: "
                "pip install 'hpsearch[s3]'"
            ) from None
        config = Config(
            retries={"max_attempts": 8, "mode": "standard"},  # rides out a brief outage
            connect_timeout=5,
            read_timeout=60,
            # MinIO and most self-hosted servers serve buckets by path, not by host name
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1", config=config
        )
        return cls(bucket, prefix, client, endpoint_url)

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def key_of(self, location: str) -> str | None:
        parts = urlsplit(location)
        if parts.scheme != "s3" or parts.netloc != self.bucket:
            return None
        name = parts.path.lstrip("/")
        if not name.startswith(self.prefix) or ".." in name.split("/"):
            return None
        return name[len(self.prefix) :] or None

    def publish(self, local: Path, key: str) -> str:
        try:
            self.client.upload_file(str(local), self.bucket, self.prefix + key)
        except Exception as error:
            raise _failed(f"upload {local.name} to {self.location(key)}", error) from error
        return self.location(key)

    def fetch(self, location: str, local: Path) -> bool:
        name = self._object_name(location)
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.{uuid4().hex}.partial")
        try:
            self.client.download_file(self.bucket, name, str(partial))
            os.replace(partial, local)
        except Exception as error:
            if _is_missing(error):
                return False
            raise _failed(f"download {location}", error) from error
        finally:
            partial.unlink(missing_ok=True)
        return True

    def open(self, location: str) -> ArtifactBody | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._object_name(location))
        except Exception as error:
            if _is_missing(error):
                return None
            raise _failed(f"read {location}", error) from error
        return ArtifactBody(size=int(response["ContentLength"]), chunks=_chunks(response["Body"]))

    def delete(self, location: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._object_name(location))
        except Exception as error:
            if not _is_missing(error):
                raise _failed(f"delete {location}", error) from error

    def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                for start in range(0, len(keys), _DELETE_BATCH):
                    batch = keys[start : start + _DELETE_BATCH]
                    self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                    deleted += len(batch)
        except Exception as error:
            raise _failed(f"delete {self.location(prefix)}*", error) from error
        return deleted

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as error:
            if _is_missing(error):
                raise ArtifactStoreError(
                    f"the artifact store's bucket {self.bucket!r} does not exist at "
                    f"{self._endpoint()}: create it, or fix HPS_ARTIFACT_URL"
                ) from None
            raise _failed(f"reach the artifact store {self.describe()}", error) from None

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (
            f" at {self.endpoint_url}" if self.endpoint_url else ""
        )

    def _endpoint(self) -> str:
        return self.endpoint_url or "AWS S3"

    def _object_name(self, location: str) -> str:
        key = self.key_of(location)
        if key is None:
            raise ArtifactStoreError(f"{location} lies outside the store {self.describe()}")
        return self.prefix + key


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"); a clear error otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ArtifactStoreError(
            f"HPS_ARTIFACT_URL must look like s3://bucket or s3://bucket/prefix, got {url!r}"
        )
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(_CHUNK)
    finally:
        body.close()


def _is_missing(error: Exception) -> bool:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


def _failed(action: str, error: Exception) -> ArtifactStoreError:
    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:
        detail = f"{response['Error'].get('Code')}: {response['Error'].get('Message')}"
    else:
        detail = f"{type(error).__name__}: {error}"
    return ArtifactStoreError(f"could not {action} ({detail})")

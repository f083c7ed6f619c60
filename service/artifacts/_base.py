"""The store's contract, shared by the local and the S3 implementation (one test suite runs
over both: tests/test_artifacts.py)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class ArtifactStoreError(RuntimeError):
    """The store cannot be reached or refused an operation; the message says which and why."""


@dataclass(frozen=True)
class ArtifactBody:
    """A stored file opened for reading: a local `path` (served as a file), or `chunks`."""

    size: int
    path: Path | None = None
    chunks: Iterator[bytes] | None = None


def checkpoint_key(study_id: int, number: int, name: str) -> str:
    return f"{study_checkpoints_prefix(study_id)}trial-{number}/{name}"


def study_checkpoints_prefix(study_id: int) -> str:
    return f"checkpoints/study-{study_id}/"


def upload_key(file_name: str) -> str:
    return f"uploads/{file_name}"


class ArtifactStore(ABC):
    """Files named by keys, recorded by locations. Safe to share among threads."""

    remote: bool
    """True when the store is not the local file system: a worker uploads what it trained and
    removes its local copy; the API reads through the store."""

    @abstractmethod
    def location(self, key: str) -> str:
        """What the database records for `key`."""

    @abstractmethod
    def key_of(self, location: str) -> str | None:
        """The key of a recorded location, or None when it lies outside this store."""

    @abstractmethod
    def publish(self, local: Path, key: str) -> str:
        """Store the local file `local` under `key` (replacing it); its location."""

    @abstractmethod
    def fetch(self, location: str, local: Path) -> bool:
        """Make `local` hold the stored file (False, and nothing written, when there is none).
        `local` is replaced atomically: a reader never sees half a file."""

    @abstractmethod
    def open(self, location: str) -> ArtifactBody | None:
        """The stored file for reading, or None when there is none."""

    @abstractmethod
    def delete(self, location: str) -> None:
        """Remove one file (no error when it is gone already)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every file whose key starts with `prefix`; how many there were."""

    @abstractmethod
    def check(self) -> None:
        """Raise `ArtifactStoreError` with one clear line when the store cannot be used."""

    @abstractmethod
    def describe(self) -> str:
        """Where the files are, for logs and `/healthz` (no credentials)."""

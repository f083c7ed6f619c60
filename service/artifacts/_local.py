"""The default store: files under the data directory, shared by every process on the host
(or by every host through a shared file system, as a Kubernetes ReadWriteMany volume)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

from service.artifacts._base import ArtifactBody, ArtifactStore


class LocalStore(ArtifactStore):
    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def location(self, key: str) -> str:
        return str((self.root / key).absolute())  # processes may differ in working directory

    def key_of(self, location: str) -> str | None:
        # resolved, so that `..` and symlinks cannot lead out of the data directory
        path = Path(location).resolve()
        root = self.root.resolve()
        if not path.is_relative_to(root):
            return None
        return path.relative_to(root).as_posix()

    def publish(self, local: Path, key: str) -> str:
        target = self.root / key
        if target.resolve() != local.resolve():
            _replace_with(target, lambda partial: shutil.copyfile(local, partial))
        return self.location(key)

    def fetch(self, location: str, local: Path) -> bool:
        source = Path(location)
        if not source.is_file():
            return False
        if source.resolve() != local.resolve():
            _replace_with(local, lambda partial: _link_or_copy(source, partial))
        return True

    def open(self, location: str) -> ArtifactBody | None:
        path = Path(location)
        if not path.is_file():
            return None
        return ArtifactBody(size=path.stat().st_size, path=path)

    def delete(self, location: str) -> None:
        Path(location).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        directory = self.root / prefix
        if not directory.is_dir():
            return 0
        count = sum(1 for path in directory.rglob("*") if path.is_file())
        shutil.rmtree(directory)
        return count

    def check(self) -> None:
        return None  # the data directory is made on first use

    def describe(self) -> str:
        return f"files under {self.root}"


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link costs nothing and the trainer only ever replaces its files (os.replace), so
    the source stays intact; another file system needs a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _replace_with(target: Path, write: Callable[[Path], object]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid4().hex}.partial")
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)

"""Uploaded data sets: store a file under a generated name, prove the trainer can load it,
record it; and list them."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO, Literal
from uuid import uuid4

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.artifacts import artifact_store, upload_key
from service.config import Settings
from service.db.models import Dataset, Study
from service.db.repositories import DatasetRepository
from service.states import ACTIVE_STUDY_STATUSES
from service.studies._reads import reading
from service.studies.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    Issue,
    NotFoundError,
    TooLargeError,
)
from service.studies.schemas import DatasetRead, Page
from service.studies.tokens import Principal
from trainer import TASKS, DatasetConfig, DatasetError, load_splits

_CHUNK = 1024 * 1024
Format = Literal["csv", "npz"]


@dataclass(frozen=True)
class Upload:
    """A file as received: its bytes, the client's file name (only its extension is used)."""

    file: BinaryIO
    filename: str
    target: str | None = None
    name: str | None = None
    task: str | None = None


@dataclass(frozen=True)
class _Stored:
    path: Path
    size_bytes: int
    sha256: str


def register_dataset(
    session: Session, settings: Settings, upload: Upload, uploader: Principal
) -> DatasetRead:
    """Store, validate (by loading it as a trial would) and record an uploaded data set, as
    `uploader`'s (a write token deletes only its own).

    Raises `InvalidInputError` (bad form or data; path `("file",)` or `("target",)`) and
    `TooLargeError`; in every failure no file and no row is left behind.
    """
    file_format = _format(upload)
    file_name = f"{uuid4().hex}.{file_format}"
    # staged on this host's disk: the trainer's loader validates a local file
    stored = _store(upload.file, settings.upload_dir / file_name, settings)
    store = artifact_store(settings)
    location: str | None = None
    try:
        config: dict[str, str | int] = {"path": str(stored.path)}
        if upload.target:
            config["target"] = upload.target
        if file_format == "npz":
            config["max_bytes"] = settings.max_dataset_bytes
        dataset = DatasetConfig(name=file_format, config=config, task=upload.task)
        try:
            splits = load_splits(dataset, cached=False)  # the API process keeps no data
        except DatasetError as error:
            raise InvalidInputError([Issue(("file",), str(error), "invalid_dataset")]) from None
        n_rows = len(splits.train) + len(splits.val)
        n_rows += 0 if splits.test is None else len(splits.test)
        location = store.publish(stored.path, upload_key(file_name))
        with session.begin():
            row = DatasetRepository(session).add(
                Dataset(
                    name=upload.name or PurePath(upload.filename).name[:255] or stored.path.name,
                    format=file_format,
                    path=location,
                    size_bytes=stored.size_bytes,
                    sha256=stored.sha256,
                    target=upload.target,
                    n_rows=n_rows,
                    n_features=math.prod(splits.input_shape),
                    n_classes=splits.n_outputs if splits.task == "classification" else None,
                    task=splits.task,
                    n_targets=splits.n_outputs if splits.task == "regression" else None,
                    owner_token_id=uploader.token_id,
                )
            )
            return DatasetRead.model_validate(row)
    except BaseException:
        if location is not None and store.remote:
            store.delete(location)
        stored.path.unlink(missing_ok=True)
        raise
    finally:
        if store.remote:
            stored.path.unlink(missing_ok=True)  # the store holds it now


def list_datasets(session: Session, *, limit: int, offset: int) -> Page[DatasetRead]:
    with reading(session):
        rows, total = DatasetRepository(session).page(limit=limit, offset=offset)
        items = [DatasetRead.model_validate(row) for row in rows]
    return Page[DatasetRead](items=items, total=total, limit=limit, offset=offset)


def _format(upload: Upload) -> Format:
    suffix = PurePath(upload.filename).suffix.lower()
    issues: list[Issue] = []
    file_format: Format | None = None
    if suffix == ".csv":
        file_format = "csv"
        if not upload.target:
            issues.append(
                Issue(("target",), "a CSV upload needs 'target', its label column", "missing")
            )
    elif suffix == ".npz":
        file_format = "npz"
        if upload.target:
            issues.append(
                Issue(("target",), "'target' is for CSV files; an NPZ file holds X and y")
            )
    else:
        issues.append(
            Issue(("file",), f"must be a .csv or .npz file, got {upload.filename!r}", "format")
        )
    if upload.task is not None and upload.task not in TASKS:
        issues.append(
            Issue(("task",), f"must be one of {', '.join(TASKS)}, got {upload.task!r}", "enum")
        )
    if issues or file_format is None:
        raise InvalidInputError(issues)
    return file_format


def _store(source: BinaryIO, path: Path, settings: Settings) -> _Stored:
    """Copy `source` to `path` (a new file), hashing it and enforcing the size limit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("xb") as target:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise TooLargeError(
                        f"the file is larger than this server's limit of "
                        f"{settings.max_upload_bytes} bytes"
                    )
                digest.update(chunk)
                target.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return _Stored(path.resolve(), size, digest.hexdigest())


def delete_dataset(
    session: Session, settings: Settings, dataset_id: int, deleter: Principal
) -> None:
    """Delete an upload (its row, then its file) unless a queued or running study uses it:
    those would fail for want of their data (409 naming them). Finished studies keep their
    results; only retraining them (the CI gate) needs the data again. An admin deletes any
    upload; a write token only those it uploaded (403)."""
    with session.begin():
        dataset = session.get(Dataset, dataset_id, with_for_update=True)
        if dataset is None:
            raise NotFoundError(f"no uploaded data set has id {dataset_id}")
        if not deleter.admin and dataset.owner_token_id != deleter.token_id:
            raise ForbiddenError(
                f"token {deleter.name!r} may delete only the data sets it uploaded "
                f"(data set {dataset_id} is not one)"
            )
        active = session.execute(
            select(Study.id, Study.name, Study.status, Study.spec).where(
                Study.status.in_(ACTIVE_STUDY_STATUSES)
            )
        ).all()
        users = [
            f"{study_id} {name!r} ({status})"
            for study_id, name, status, spec in active
            if isinstance(spec.get("dataset"), dict) and spec["dataset"].get("id") == dataset_id
        ]
        if users:
            raise ConflictError(
                f"data set {dataset_id} is used by {'study' if len(users) == 1 else 'studies'} "
                f"{', '.join(users)}; cancel or wait for them first"
            )
        location = dataset.path
        session.delete(dataset)
    store = artifact_store(settings)
    if store.key_of(location) is not None:  # never a file outside the store
        store.delete(location)

"""Workers on many hosts with no shared file system: checkpoints and uploads in an object
store (moto's S3 server). Each "host" is a data directory of its own."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.api import create_app
from service.artifacts import LocalStore
from service.artifacts._s3 import S3Store
from service.db.models import Study, StudyStatus, Trial, TrialState
from service.worker.checkpoints import TrialCheckpoints
from service.worker.loop import WorkerOptions, WorkerProcess
from tests.api_fixtures import AUTH, TestClient, make_settings
from tests.s3_fixtures import Bucket
from tests.test_worker import add_study, sessions, spec
from tests.test_worker_processes import (
    epochs_of_first_trial,
    finish,
    resumable_spec,
    start_worker,
    wait_for,
)

pytest_plugins = ["tests.s3_fixtures"]
__all__ = ["sessions"]  # the fixture, shared with test_worker


def local_files(data_dir: Path, under: str) -> list[Path]:
    root = data_dir / under
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def trials_of(sessions: sessionmaker[Session], study_id: int) -> list[Trial]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
            ).all()
        )


def an_npz(rows: int = 200) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, X=rng.normal(size=(rows, 6)).astype(np.float32), y=np.arange(rows) % 3)
    return buffer.getvalue()


def test_a_worker_trains_on_an_upload_from_the_bucket_and_publishes_its_checkpoints(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path, bucket: Bucket
) -> None:
    api_host, worker_host = tmp_path / "api", tmp_path / "worker"
    remote = {"artifact_url": bucket.url, "s3_endpoint_url": bucket.endpoint}
    api = make_settings(migrated_database_url, api_host, **remote)
    with TestClient(create_app(api), headers=AUTH) as client:
        uploaded = client.post("/api/v1/datasets", files={"file": ("d.npz", an_npz())})
        assert uploaded.status_code == 201, uploaded.text
    study_id = add_study(sessions, spec(dataset={"id": uploaded.json()["id"]}))

    settings = make_settings(migrated_database_url, worker_host, heartbeat_interval_s=0.2, **remote)
    options = WorkerOptions(device="cpu", exit_when_idle=True)
    assert WorkerProcess(settings, options).run() == 0

    trials = trials_of(sessions, study_id)
    with sessions() as session:
        assert session.get_one(Study, study_id).status == StudyStatus.COMPLETED
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for trial in trials:
        prefix = f"{bucket.url}/checkpoints/study-{study_id}/trial-{trial.number}/"
        assert trial.checkpoint_path == prefix + "best.ckpt"
        assert trial.last_checkpoint_path == prefix + "last.ckpt"
    # the best checkpoint is a Lightning checkpoint, readable from the bucket alone
    key = f"checkpoints/study-{study_id}/trial-0/best.ckpt"
    checkpoint = torch.load(io.BytesIO(bucket.read(key)), map_location="cpu", weights_only=False)
    assert any(name.endswith("weight") for name in checkpoint["state_dict"])
    assert local_files(worker_host, "checkpoints") == []  # the worker kept no copy
    assert len(local_files(worker_host, "cache/uploads")) == 1  # the data set, fetched once
    with TestClient(create_app(api), headers=AUTH) as client:
        downloaded = client.get(f"/api/v1/studies/{study_id}/trials/0/checkpoint")
    assert downloaded.status_code == 200
    assert downloaded.content == bucket.read(key)


def test_a_killed_worker_s_trial_resumes_on_another_host_from_the_bucket(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path, bucket: Bucket
) -> None:
    url = migrated_database_url
    study_id = add_study(sessions, resumable_spec(n_trials=2))
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    first = start_worker(url, host_a, **bucket.env())
    try:
        # epoch 3 is recorded, so the bucket holds the resume state of epoch 2 (see on_epoch)
        wait_for(lambda: epochs_of_first_trial(sessions, study_id) >= 3, 120, "three epochs")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = start_worker(url, host_b, "--exit-when-idle", **bucket.env())
    finish(second)

    trials = trials_of(sessions, study_id)
    retry = next(t for t in trials if t.retry_of_id is not None)
    original = next(t for t in trials if t.id == retry.retry_of_id)
    with sessions() as session:
        assert session.get_one(Study, study_id).status == StudyStatus.COMPLETED
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert original.last_checkpoint_path == (
        f"{bucket.url}/checkpoints/study-{study_id}/trial-{original.number}/last.ckpt"
    )
    assert retry.resumed_from_epoch is not None
    assert retry.resumed_from_epoch >= 2  # from the bucket: host B never saw host A's disk
    assert retry.checkpoint_path is not None
    assert bucket.read(retry.checkpoint_path.removeprefix(f"{bucket.url}/"))
    assert local_files(host_b, "checkpoints") == []


def test_a_retry_resumes_with_its_original_s_best_file_beside_it(tmp_path: Path) -> None:
    """A retry is a trial of its own (another directory): without its original's best.ckpt,
    one that never improved again after resuming would record a best file that is not there."""
    root = tmp_path / "data" / "checkpoints"
    store = LocalStore(tmp_path / "data")
    original = TrialCheckpoints(store, root, study_id=1, number=0)
    original.local_dir.mkdir(parents=True)
    (original.local_dir / "last.ckpt").write_bytes(b"state of epoch 2")
    (original.local_dir / "best.ckpt").write_bytes(b"weights of epoch 1")
    retry = TrialCheckpoints(store, root, study_id=1, number=4)
    resume = retry.prepare_resume(original.resume_location)
    assert resume == retry.local_dir / "last.ckpt"
    assert resume.read_bytes() == b"state of epoch 2"
    assert (retry.local_dir / "best.ckpt").read_bytes() == b"weights of epoch 1"
    assert retry.prepare_resume(str(root / "study-1" / "trial-9" / "last.ckpt")) is None


def test_sync_uploads_a_file_only_when_the_trainer_rewrote_it(
    tmp_path: Path, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = S3Store.from_url(bucket.url, bucket.endpoint)
    uploads: list[str] = []
    publish = store.publish

    def counted(local: Path, key: str) -> str:
        uploads.append(key)
        return publish(local, key)

    monkeypatch.setattr(store, "publish", counted)
    checkpoints = TrialCheckpoints(store, tmp_path / "checkpoints", study_id=2, number=0)
    checkpoints.local_dir.mkdir(parents=True)
    last = checkpoints.local_dir / "last.ckpt"
    last.write_bytes(b"epoch 1")
    checkpoints.sync()
    checkpoints.sync()  # unchanged: not again
    assert uploads == ["checkpoints/study-2/trial-0/last.ckpt"]
    partial = last.with_name("partial")
    partial.write_bytes(b"epoch 2")
    os.utime(partial, ns=(last.stat().st_mtime_ns + 10**6,) * 2)
    partial.replace(last)  # as the trainer writes it
    checkpoints.sync()
    assert len(uploads) == 2
    assert bucket.read("checkpoints/study-2/trial-0/last.ckpt") == b"epoch 2"

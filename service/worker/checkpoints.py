"""A trial's checkpoint files between the trainer's local directory and the artifact store.

The trainer writes `best.ckpt` and `last.ckpt` into a local directory. With the local store
that directory *is* the store and nothing moves. With an object store the worker uploads the
files as they change (after an epoch, so a killed worker's retry on another host resumes from
a recent epoch), publishes them when the trial ends, then removes its local copy; a retry
downloads its original's files before it resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from service.artifacts import ArtifactStore, ArtifactStoreError, checkpoint_key
from trainer import TrialResult

logger = logging.getLogger(__name__)

BEST, LAST = "best.ckpt", "last.ckpt"


class TrialCheckpoints:
    def __init__(self, store: ArtifactStore, root: Path, study_id: int, number: int) -> None:
        self.store = store
        self.study_id = study_id
        self.number = number
        self.local_dir = root / f"study-{study_id}" / f"trial-{number}"
        self._published: dict[str, int] = {}  # file name -> the mtime_ns of what was uploaded

    @property
    def resume_location(self) -> str:
        """Where this trial's resume checkpoint will be, recorded when it starts."""
        if not self.store.remote:
            return str(self.local_dir / LAST)  # where the trainer writes it: the store itself
        return self.store.location(checkpoint_key(self.study_id, self.number, LAST))

    def prepare_resume(self, resume_from: str | None) -> Path | None:
        """The local `last.ckpt` to resume from, with its trial's `best.ckpt` beside it (a
        resumed trial that never improves again still has its best file); None when the
        checkpoint is gone (the trial starts over)."""
        if resume_from is None:
            return None
        local = self.local_dir / LAST
        try:
            found = self.store.fetch(resume_from, local)
            if found:
                best = resume_from.removesuffix(LAST) + BEST
                if best != resume_from and not (self.local_dir / BEST).exists():
                    self.store.fetch(best, self.local_dir / BEST)
        except ArtifactStoreError as error:
            logger.warning(
                "trial %s: cannot fetch %s (%s); starting over", self.number, resume_from, error
            )
            return None
        if not found:
            logger.warning(
                "trial %s: checkpoint %s is gone; starting over", self.number, resume_from
            )
            return None
        return local

    def sync(self) -> None:
        """Upload the files that changed since the last upload (remote stores only). A failed
        upload is logged and tried again next time: training goes on."""
        if not self.store.remote:
            return
        try:
            self._upload_changed()
        except ArtifactStoreError as error:
            logger.warning("trial %s: checkpoint upload failed, will retry: %s", self.number, error)

    def publish(self, result: TrialResult) -> TrialResult:
        """`result` with its checkpoint paths as store locations, every file uploaded; a file
        that cannot be stored is dropped from the result (logged), not the trial's metrics."""
        if not self.store.remote:
            return result
        try:
            self._upload_changed()
        except ArtifactStoreError as error:
            logger.error("trial %s: its checkpoints could not be stored: %s", self.number, error)
            return dataclasses.replace(result, best_checkpoint=None, last_checkpoint=None)
        return dataclasses.replace(
            result,
            best_checkpoint=self._location_of(result.best_checkpoint),
            last_checkpoint=self._location_of(result.last_checkpoint),
        )

    def discard_local(self) -> None:
        """Remove the local copy once the store holds the files (remote stores only)."""
        if self.store.remote:
            shutil.rmtree(self.local_dir, ignore_errors=True)

    def _upload_changed(self) -> None:
        # best first: a retry that finds this `last` finds a `best` at least as recent
        for name in (BEST, LAST):
            path = self.local_dir / name
            try:
                modified = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if self._published.get(name) != modified:
                self.store.publish(path, checkpoint_key(self.study_id, self.number, name))
                self._published[name] = modified

    def _location_of(self, written: str | None) -> str | None:
        if written is None:
            return None
        name = Path(written).name
        if name not in self._published:
            return None
        return self.store.location(checkpoint_key(self.study_id, self.number, name))

"""Giving back trials a worker claimed but never started."""

from __future__ import annotations

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from service.db.models import Study, Trial, TrialState
from service.queue.study_status import finish_study_if_done

_RELEASED = (
    update(Trial)
    # (the bind is not named worker_id: SET names that column)
    # never started (`TrialRecorder.started` sets the device): a worker training a pack
    # whose one member was handed over keeps the others
    .where(
        Trial.worker_id == bindparam("holder"),
        Trial.state == TrialState.RUNNING,
        Trial.device.is_(None),
    )
    .values(state=TrialState.WAITING, worker_id=None)
    .returning(Trial.study_id)
)


def release_claims(session: Session, worker_id: int) -> None:
    """Give back the trials `worker_id` holds but will not run, in the session's transaction:
    called when it runs none (it is stopping, or its trial was handed over), so any it holds
    was claimed with its last trial's result and never started. Each waits in its slot for
    the next claim, which takes it before any new trial (a retry keeps its parameters, a
    new trial is sampled then). A study whose cancel or time budget took effect meanwhile
    ends, as it would have when its last trial ended."""
    study_ids = session.connection().execute(_RELEASED, {"holder": worker_id}).scalars()
    for study_id in sorted(set(study_ids)):  # trials' rows, then studies': a trial's end order
        study = session.get_one(Study, study_id, with_for_update=True)
        finish_study_if_done(session, study)

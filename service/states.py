"""The states a study and a trial go through, and the sets of them that decide things.

One module for every reader and writer: the queue, the recorder, the reaper, the API's counts,
the REST client and the CI gate. Plain enums (no SQLAlchemy), so the client imports it too.

Study: queued → running → completed | failed | cancelled.
Trial: running → complete | pruned | failed; waiting: failed (its worker was lost) and
handed back to be retried, which makes a new running trial (`retry_of`).
"""

from __future__ import annotations

import enum


class StudyStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TrialState(enum.StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    WAITING = "waiting"


# Tuples, not sets: SQL `IN (...)` lists built from them keep one order (and one cache key).
ACTIVE_STUDY_STATUSES = (StudyStatus.QUEUED, StudyStatus.RUNNING)
"""A study a worker may still claim trials of."""

FINAL_STUDY_STATUSES = (StudyStatus.COMPLETED, StudyStatus.FAILED, StudyStatus.CANCELLED)
"""A study that has ended: nothing about it changes any more."""

SETTLED_STUDY_STATUSES = (StudyStatus.COMPLETED, StudyStatus.CANCELLED)
"""Ended by its budget or its cancel (not by an error): its counts are final."""

ENDED_TRIAL_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED)
"""A trial that has ended and holds a slot of the study's budget (less its retries)."""

SUCCEEDED_TRIAL_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
"""A trial that produced a result; a study that ends with trials but none of these failed."""

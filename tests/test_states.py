"""The study and trial states: every state is classified, and the sets do not overlap."""

from __future__ import annotations

from service.client import FINAL_STATUSES
from service.states import (
    ACTIVE_STUDY_STATUSES,
    ENDED_TRIAL_STATES,
    FINAL_STUDY_STATUSES,
    SETTLED_STUDY_STATUSES,
    SUCCEEDED_TRIAL_STATES,
    StudyStatus,
    TrialState,
)


def test_every_study_status_is_active_or_final_and_not_both() -> None:
    assert set(ACTIVE_STUDY_STATUSES) | set(FINAL_STUDY_STATUSES) == set(StudyStatus)
    assert not set(ACTIVE_STUDY_STATUSES) & set(FINAL_STUDY_STATUSES)
    assert set(SETTLED_STUDY_STATUSES) < set(FINAL_STUDY_STATUSES)
    assert StudyStatus.FAILED not in SETTLED_STUDY_STATUSES  # a failed study's counts may not be


def test_ended_trials_exclude_the_running_and_the_waiting() -> None:
    assert set(ENDED_TRIAL_STATES) == set(TrialState) - {TrialState.RUNNING, TrialState.WAITING}
    assert set(SUCCEEDED_TRIAL_STATES) == set(ENDED_TRIAL_STATES) - {TrialState.FAILED}


def test_the_rest_client_polls_until_the_same_final_statuses() -> None:
    assert {status.value for status in FINAL_STUDY_STATUSES} == FINAL_STATUSES

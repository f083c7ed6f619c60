"""Counts the metrics endpoint reports, computed from the database when scraped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.db.models import StudyStatus, TrialState
from service.db.repositories import DurationHistogram, StudyRepository, TrialRepository
from service.studies._reads import reading


@dataclass(frozen=True)
class ServiceStats:
    studies_by_status: dict[str, int]
    """Every status is present (0 when none)."""
    trials_by_state: dict[str, int]
    trial_durations: DurationHistogram


def collect_stats(session: Session, duration_bounds: Sequence[float]) -> ServiceStats:
    """Three aggregate queries; no rows are loaded."""
    with reading(session):
        studies = StudyRepository(session).count_by_status()
        trials = TrialRepository(session)
        states = trials.count_by_state()
        durations = trials.duration_histogram(duration_bounds)
    return ServiceStats(
        studies_by_status={status.value: 0 for status in StudyStatus} | studies,
        trials_by_state={state.value: 0 for state in TrialState} | states,
        trial_durations=durations,
    )

"""/compare: studies of one dataset side by side."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import ReadAccess, SessionDep
from service.api.paths import API_PREFIX
from service.studies.compare import StudyComparison, compare_studies

router = APIRouter(prefix=f"{API_PREFIX}/compare", tags=["studies"], dependencies=[ReadAccess])


@router.get("")
def compare(
    session: SessionDep,
    studies: Annotated[
        list[Annotated[int, Query(ge=0, le=2**63 - 1)]],
        Query(min_length=2, max_length=10, description="the studies, e.g. ?studies=3&studies=7"),
    ],
) -> StudyComparison:
    """Two or more studies of the same dataset: their best values and configurations, the
    technique each one's report found best, their best trials' curves, and sentences."""
    return compare_studies(session, studies)

"""Studies side by side: two or more studies of the same data, their best results, the
technique each one's report found best, and their best trials' curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Study, TrialEpoch
from service.studies._reads import reading
from service.studies.errors import InvalidInputError, Issue
from service.studies.report import build_report


class CurvePoint(BaseModel):
    epoch: int
    value: float | None


class ComparedStudy(BaseModel):
    id: int
    name: str
    status: str
    objective_metric: str
    direction: str
    n_complete: int
    best_value: float | None
    best_params: dict[str, Any] | None
    best_test_metrics: dict[str, float]
    best_curve: list[CurvePoint]
    """The objective per epoch of the best trial."""
    leaders: dict[str, str]
    """Per technique, the group its report found better than every other with an interval
    excluding zero (techniques without such a group are left out)."""


class StudyComparison(BaseModel):
    dataset: dict[str, Any]
    studies: list[ComparedStudy]
    sentences: list[str]


def compare_studies(session: Session, study_ids: Sequence[int]) -> StudyComparison:
    """`InvalidInputError` for fewer than two ids, an unknown one, or studies of other data."""
    if len(study_ids) < 2 or len(set(study_ids)) != len(study_ids):
        raise InvalidInputError(
            [
                Issue(
                    ("studies",),
                    "name two or more different studies: ?studies=3&studies=7",
                    where="query",
                )
            ]
        )
    with reading(session):
        studies = {s.id: s for s in session.scalars(select(Study).where(Study.id.in_(study_ids)))}
    issues = [
        Issue(("studies", i), f"no study has id {study_id}", "not_found", "query")
        for i, study_id in enumerate(study_ids)
        if study_id not in studies
    ]
    if issues:
        raise InvalidInputError(issues)
    first = studies[study_ids[0]]
    dataset = (first.spec or {}).get("dataset", {})
    for i, study_id in enumerate(study_ids[1:], start=1):
        if (studies[study_id].spec or {}).get("dataset", {}) != dataset:
            issues.append(
                Issue(
                    ("studies", i),
                    f"study {study_id} trained on other data than study {first.id} (their "
                    "datasets differ): compare studies of one dataset",
                    where="query",
                )
            )
    if issues:
        raise InvalidInputError(issues)
    compared = [_compared(session, studies[study_id]) for study_id in study_ids]
    return StudyComparison(dataset=dataset, studies=compared, sentences=_sentences(compared))


def _compared(session: Session, study: Study) -> ComparedStudy:
    report = build_report(session, study.id)
    curve: list[CurvePoint] = []
    if study.best_trial_id is not None:
        with reading(session):
            epochs = session.scalars(
                select(TrialEpoch)
                .where(TrialEpoch.trial_id == study.best_trial_id)
                .order_by(TrialEpoch.epoch)
            ).all()
        curve = [
            CurvePoint(epoch=e.epoch, value=getattr(e, study.objective_metric, None))
            for e in epochs
        ]
    leaders = {
        technique.parameter: technique.comparisons[0].better
        for technique in report.techniques
        if technique.comparisons and all(c.conclusive for c in technique.comparisons)
    }
    return ComparedStudy(
        id=study.id,
        name=study.name,
        status=study.status,
        objective_metric=study.objective_metric,
        direction=study.direction,
        n_complete=report.n_complete,
        best_value=None if report.best is None else report.best.value,
        best_params=None if report.best is None else report.best.params,
        best_test_metrics={} if report.best is None else report.best.test_metrics,
        best_curve=curve,
        leaders=leaders,
    )


def _sentences(compared: Sequence[ComparedStudy]) -> list[str]:
    metrics = {s.objective_metric for s in compared}
    if len(metrics) > 1:
        return [
            "the studies optimized different objectives ("
            + ", ".join(sorted(metrics))
            + "): their best values do not compare"
        ]
    scored = [s for s in compared if s.best_value is not None]
    if len(scored) < 2:
        return ["fewer than two of the studies have a best trial yet"]
    sign = 1.0 if scored[0].direction == "minimize" else -1.0
    ranked = sorted(scored, key=lambda s: sign * (s.best_value or 0.0))
    metric = ranked[0].objective_metric
    lines = [
        f"study {ranked[0].id} '{ranked[0].name}' has the best {metric}, "
        f"{ranked[0].best_value:.4g} (best of {ranked[0].n_complete} complete trials); "
        + "; ".join(f"study {s.id}: {s.best_value:.4g} ({s.n_complete} trials)" for s in ranked[1:])
    ]
    for parameter in sorted({p for s in compared for p in s.leaders}):
        found = {s.id: s.leaders[parameter] for s in compared if parameter in s.leaders}
        if len(set(found.values())) == 1 and len(found) == len(compared):
            lines.append(f"every study found {next(iter(found.values()))} best")
        elif len(set(found.values())) > 1:
            lines.append(
                f"the studies disagree on {parameter}: "
                + ", ".join(f"study {sid}: {label}" for sid, label in found.items())
            )
    return lines

"""Repositories: the service's SQL, one class per table family.

Each takes the caller's `Session`, flushes where the caller needs generated ids, and never
commits: the use case that calls it owns the transaction. They return ORM rows (or plain rows
for bulk reads) to use cases only; use cases turn them into frozen schemas.
"""

from service.db.repositories._datasets import DatasetRepository
from service.db.repositories._health import ping
from service.db.repositories._studies import StudyRepository
from service.db.repositories._trials import (
    JSON_TEXT_SCALARS,
    DurationHistogram,
    ExportRow,
    JsonTextPage,
    SortOrder,
    TrialRepository,
    TrialSort,
    problem_pattern,
)
from service.db.repositories._workers import WorkerRepository

__all__ = [
    "JSON_TEXT_SCALARS",
    "DatasetRepository",
    "DurationHistogram",
    "ExportRow",
    "JsonTextPage",
    "SortOrder",
    "StudyRepository",
    "TrialRepository",
    "TrialSort",
    "WorkerRepository",
    "ping",
    "problem_pattern",
]

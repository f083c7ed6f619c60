"""Per-process memory of a settled study's trial counts by state.

No trial of a completed or cancelled study changes any more (the study ended only when its
last trial did), so its counts are computed once per server process instead of by a count over
its trials on every read (10,000 index entries for a large study: most of a read's database
time). A failed study is not settled: its running trials may still report back.

The cache is per engine (a process's database, never shared between two databases) and keyed
by the study's id with its `finished_at`, so a deleted study whose id a new one reuses (SQLite
can) is never answered from the old entry.
"""

from __future__ import annotations

import weakref
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.states import SETTLED_STUDY_STATUSES

_MAX_CACHED = 4096

_counts: weakref.WeakKeyDictionary[Engine, dict[int, tuple[datetime, dict[str, int]]]]
_counts = weakref.WeakKeyDictionary()


def is_settled(status: str | None, finished_at: datetime | None) -> bool:
    return status is not None and status in SETTLED_STUDY_STATUSES and finished_at is not None


def _cache(session: Session) -> dict[int, tuple[datetime, dict[str, int]]] | None:
    bind = session.get_bind()
    return _counts.setdefault(bind, {}) if isinstance(bind, Engine) else None


def recall(session: Session, study_id: int) -> tuple[datetime, dict[str, int]] | None:
    """The remembered (finished_at, counts by state) of a study, if any; the caller checks
    that the study's `finished_at` still matches."""
    cache = _cache(session)
    entry = None if cache is None else cache.get(study_id)
    return None if entry is None else (entry[0], dict(entry[1]))


def remember(
    session: Session, study_id: int, finished_at: datetime, counts: dict[str, int]
) -> None:
    cache = _cache(session)
    if cache is None:
        return
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[study_id] = (finished_at, dict(counts))

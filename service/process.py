"""Process-wide tuning shared by the long-running processes (API server, worker)."""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_objects() -> None:
    """Hide what startup loaded from the cyclic garbage collector, once per process.

    A server or worker process holds millions of long-lived objects (torch, Lightning,
    scikit-learn, pydantic schemas, SQLAlchemy mappers, Optuna); every full collection walks
    them all. For the API that stalled every request in flight (bench/README.md has the p99
    before and after); a worker's training, which allocates a lot, triggers
    such collections often. Frozen objects are never freed by the collector, so this is done
    once, after startup's garbage is collected. In a test process it also makes full
    collections more frequent, so a leaked, unclosed database connection shows up as a
    ResourceWarning sooner (and in whichever test is running then): close what you open.
    """
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()

"""/workers: who is training, on what, and when each was last heard from."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import PageDep, PrivateAccess, SessionDep
from service.api.paths import API_PREFIX
from service.studies import list_workers
from service.studies.schemas import Page, WorkerRead

router = APIRouter(prefix=f"{API_PREFIX}/workers", tags=["workers"], dependencies=[PrivateAccess])


@router.get("")
def list_(session: SessionDep, page: PageDep) -> Page[WorkerRead]:
    """Registered workers, most recently heard from first, with their heartbeat age."""
    return list_workers(session, limit=page.limit, offset=page.offset)

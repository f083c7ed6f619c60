"""/api/v1/healthz (and /healthz): open to all (load balancers and probes carry no token)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from service.api.deps import SessionDep
from service.api.paths import API_PREFIX
from service.studies import check_health
from service.studies.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    f"{API_PREFIX}/healthz",
    responses={
        503: {
            "model": Health,
            "description": "the database is unreachable, or its schema is not this code's",
        }
    },
)
@router.get("/healthz", include_in_schema=False)  # where probes look by default
def healthz(session: SessionDep, response: Response) -> Health:
    """200 when the database answers and its schema is the one this code expects, else 503
    (`schema` and `detail` say what to run)."""
    health = check_health(session)
    if health.status != "ok":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return health

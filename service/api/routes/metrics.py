"""/api/v1/metrics (and /metrics): Prometheus text.

It is a read: open only where `public_read` is set; otherwise Prometheus sends the token
(`authorization: {credentials: ...}` in its scrape config).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import ReadAccess
from service.api.paths import API_PREFIX
from service.metrics import Metrics

router = APIRouter(tags=["metrics"], dependencies=[ReadAccess])


@router.get(
    f"{API_PREFIX}/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
@router.get("/metrics", response_class=Response, include_in_schema=False)  # Prometheus's default
def metrics(request: Request) -> Response:
    """Studies by status and trials by state (read from the database now), trial durations,
    and the API's latency by route."""
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)

"""One router per resource, gathered here (each carries its full path)."""

from fastapi import APIRouter

from service.api.routes import (
    compare,
    dashboard_data,
    datasets,
    health,
    metrics,
    plugins,
    studies,
    tokens,
    trials,
    workers,
)

router = APIRouter()
for _module in (
    studies,
    trials,
    compare,
    datasets,
    plugins,
    workers,
    health,
    metrics,
    dashboard_data,
    tokens,
):
    router.include_router(_module.router)

__all__ = ["router"]

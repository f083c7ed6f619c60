"""The app factory: `create_app(settings)`; nothing touches the database until startup.

Run with `uvicorn --factory service.api.app:create_app` (settings from `HPS_*`), or build one
per test with its own settings. The REST API is under `/api/v1` (OpenAPI UI at `/docs`);
`/healthz` and `/metrics` are also served at the root for probes and Prometheus.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from service.api.errors import install_error_handlers
from service.api.log_scrub import scrub_access_logs
from service.api.middleware import LatencyMiddleware, SecurityHeadersMiddleware
from service.api.routes import router
from service.api.runtime import lifespan
from service.api.write_guard import WriteGuard
from service.config import Settings, get_settings
from service.dashboard import mount_dashboard
from service.metrics import create_metrics
from service.studies import load_plugins

DESCRIPTION = """\
Submit hyperparameter studies, follow their trials, export results, upload data sets.

**Auth**: `Authorization: Bearer <token>`, a token of `HPS_API_TOKEN` (comma-separated for
several) or, when none is set, the one the server generated into `<data_dir>/api-token`.
Writes always need it; reads (including `/metrics`) too unless `HPS_PUBLIC_READ` is set.
`/healthz` and these docs are open.

**Lists** are pages: `?limit=` (1..200, default 50) and `?offset=`, answered as
`{"items", "total", "limit", "offset"}`.

**422** bodies list `{"loc": ["body", ...JSON path], "msg", "type"}` per problem.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="hpsearch",
        summary="Hyperparameter search for neural-network training techniques",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings if settings is not None else get_settings()
    # Before any request: a spec's model and dataset names resolve against this allow-list.
    load_plugins(app.state.settings)
    app.state.metrics = create_metrics()
    install_error_handlers(app)
    scrub_access_logs()
    app.add_middleware(WriteGuard)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(LatencyMiddleware, histogram=app.state.metrics.request_duration)
    # outermost: a request for another host name is refused before anything reads it
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=app.state.settings.host_names)
    app.include_router(router)
    mount_dashboard(app)  # after the API: `/`, `/studies/...`, `/static/...`
    return app

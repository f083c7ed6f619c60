"""The web dashboard: static pages (HTML, vanilla JS modules, CSS) over the REST API.

`mount_dashboard(app)` serves the pages at `/`, `/studies/{id}` and
`/studies/{id}/trials/{number}`, and their assets under `/static/` (Plotly's JS is a partial
bundle shipped here, built from plotly.js by `plotly_bundle/`: the dashboard works offline).
The pages hold no data, so they need no token; their scripts send the bearer token with every
API call.
"""

from service.dashboard._routes import (
    PARTIAL_PLOTLY,
    STATIC_DIR,
    create_dashboard_router,
    full_plotly_js,
    mount_dashboard,
)

__all__ = [
    "PARTIAL_PLOTLY",
    "STATIC_DIR",
    "create_dashboard_router",
    "full_plotly_js",
    "mount_dashboard",
]

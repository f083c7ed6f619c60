"""The dashboard's routes: five pages, the example specs, Plotly, and the static assets."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PARTIAL_PLOTLY = STATIC_DIR / "vendor" / "plotly-hps.min.js"
"""Only the traces the pages draw (see plotly_bundle/README.md): a third of the full bundle."""
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
"""The repository's `examples/*.json` (absent from an installed wheel: no examples then)."""

# Ids as the API bounds them (service.api imports this package, so not from there).
_Id = Annotated[int, PathParam(ge=0, le=2**63 - 1)]
_NO_STORE = {"Cache-Control": "no-cache"}  # pages and modules: revalidate (304 when unchanged)


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes
    etag: str


def full_plotly_js() -> bytes:
    """plotly.min.js as the `plotly` Python package ships it (every trace type)."""
    return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()


@functools.cache
def _plotly_js() -> _Asset:
    """The partial Plotly bundle (the package's full one if it is missing), read and
    compressed once. A browser runs the full 4.8 MB bundle for ~1.7 s on a first visit here,
    most of the 2 s a 10,000-trial study page may take to show its history."""
    try:
        body = PARTIAL_PLOTLY.read_bytes()
    except OSError:
        logger.warning("%s is missing; serving the full Plotly bundle", PARTIAL_PLOTLY)
        body = full_plotly_js()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return _Asset(body, gzip.compress(body, compresslevel=6, mtime=0), etag)


_INCLUDE = re.compile(r"<!--#include ([\w.-]+)-->")


@functools.cache
def _page_html(name: str) -> str:
    """A page with its `<!--#include file-->` lines replaced by the files (the header and
    token dialog every page shares), assembled once per process."""
    text = (STATIC_DIR / name).read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda match: (STATIC_DIR / match.group(1)).read_text("utf-8"), text)


def _examples(directory: Path) -> list[dict[str, Any]]:
    examples = []
    for path in sorted(directory.glob("*.json")):
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            logger.warning("example spec %s skipped: %s", path, error)
            continue
        examples.append({"name": path.stem, "spec": spec})
    return examples


def create_dashboard_router(examples_dir: Path = EXAMPLES_DIR) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def page(name: str) -> HTMLResponse:
        return HTMLResponse(_page_html(name), headers=_NO_STORE)

    @router.get("/")
    async def studies_page() -> HTMLResponse:
        return page("index.html")

    @router.get("/studies/{study_id}")
    async def study_page(study_id: _Id) -> HTMLResponse:
        return page("study.html")

    @router.get("/studies/{study_id}/report")
    async def report_page(study_id: _Id) -> HTMLResponse:
        return page("report.html")

    @router.get("/compare")
    async def compare_page() -> HTMLResponse:
        return page("compare.html")

    @router.get("/studies/{study_id}/trials/{number}")
    async def trial_page(study_id: _Id, number: _Id) -> HTMLResponse:
        return page("trial.html")

    @router.get("/static/examples.json")
    async def examples() -> JSONResponse:
        return JSONResponse(_examples(examples_dir), headers=_NO_STORE)

    @router.get("/static/plotly.min.js")
    async def plotly_js(request: Request) -> Response:
        asset = _plotly_js()
        headers = {
            "ETag": asset.etag,
            "Cache-Control": "public, max-age=86400",
            "Vary": "Accept-Encoding",
        }
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        media_type = "text/javascript; charset=utf-8"
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(asset.gzipped, media_type=media_type, headers=headers)
        return Response(asset.body, media_type=media_type, headers=headers)

    return router


class _RevalidatedStaticFiles(StaticFiles):
    """Static files that browsers revalidate on each load (a 304 when unchanged), so a new
    release's scripts are never mixed with a cached page."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def mount_dashboard(app: FastAPI, examples_dir: Path = EXAMPLES_DIR) -> None:
    """Serve the dashboard from `app`. Call it after the API's routers: its paths (`/`,
    `/studies/...`, `/static/...`) never overlap `/api/v1`, `/docs`, `/healthz` or `/metrics`."""
    app.include_router(create_dashboard_router(examples_dir))
    app.mount("/static", _RevalidatedStaticFiles(directory=STATIC_DIR), name="dashboard-static")

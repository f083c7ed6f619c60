"""Where the API lives. Routers carry the full prefix themselves, so a route's `path` is its
whole template (the latency metric's label) on every FastAPI version."""

from typing import Annotated, Any

from fastapi import Path

API_PREFIX = "/api/v1"

# Ids and numbers are 64-bit database integers: a larger one is a 422, never a driver error.
_DB_INT: dict[str, Any] = {"ge": 0, "le": 2**63 - 1}
StudyId = Annotated[int, Path(description="the study's id", **_DB_INT)]
DatasetId = Annotated[int, Path(description="the upload's id", **_DB_INT)]
TrialNumber = Annotated[int, Path(description="the trial's number in its study", **_DB_INT)]

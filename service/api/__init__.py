"""The REST API (FastAPI): routes parse and validate, call a use case, return a schema."""

from service.api.app import create_app

__all__ = ["create_app"]

"""What the use cases raise; the API turns each into one HTTP status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ServiceError(Exception):
    """Base of the errors a client can cause (never a bug or an outage)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(ServiceError):
    """The study, trial, data set or file does not exist."""


class ConflictError(ServiceError):
    """The request does not fit the study's state (e.g. deleting a running study)."""


class ForbiddenError(ServiceError):
    """The server refuses to act on the object (e.g. a checkpoint outside its directory)."""


class TooLargeError(ServiceError):
    """An upload beyond the configured size limit."""


@dataclass(frozen=True)
class Issue:
    """One problem with a request body: where (a JSON path within the body) and why."""

    path: tuple[str | int, ...]
    reason: str
    type: str = "value_error"
    where: str = "body"
    """What `path` is within: the body, or the query string."""


class InvalidInputError(ServiceError):
    """A body that parsed but breaks a server-side rule (limits, unknown ids, bad data)."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        if not issues:
            raise ValueError("InvalidInputError needs at least one issue")
        super().__init__("; ".join(f"{'.'.join(map(str, i.path))}: {i.reason}" for i in issues))
        self.issues = tuple(issues)

"""Studies the gate reads over REST: an existing one by id, or a spec submitted and followed to
its end. Every `ApiError` becomes a `GateError` carrying the same one-line message."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from service.client import FINAL_STATUSES, ApiClient, ApiError
from service.gate.errors import GateError

Progress = Callable[[dict[str, Any]], None]
"""Called with each snapshot of a study being followed."""


@contextmanager
def api_errors() -> Iterator[None]:
    try:
        yield
    except ApiError as error:
        raise GateError(error.message) from None


def fetch_study(api: ApiClient, study_id: int) -> dict[str, Any]:
    """The study detail (spec, best trial); a GateError if the server cannot give it."""
    with api_errors():
        try:
            return api.get_study(study_id)
        except ApiError as error:
            if error.status_code == 404:
                raise GateError(f"study {study_id} does not exist on {api.url}") from None
            raise


def run_study(
    api: ApiClient,
    spec: dict[str, Any],
    *,
    on_progress: Progress | None = None,
    still_running: Callable[[], str | None] | None = None,
    poll_s: float = 0.5,
) -> dict[str, Any]:
    """Submit `spec` and follow the study to its end; returns the final study detail.

    still_running: asked at every poll; a message it returns (the workers are gone, say) ends
        the wait with a GateError.
    """
    with api_errors():
        created = api.submit_study(spec)
        study = created
        for study in api.watch_study(created["id"], poll_s=poll_s):
            if on_progress is not None:
                on_progress(study)
            problem = still_running() if still_running is not None else None
            if problem is not None and study["status"] not in FINAL_STATUSES:
                raise GateError(f"study {created['id']} cannot finish: {problem}")
        return study

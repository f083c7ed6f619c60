"""`ApiClient`: one method per REST endpoint a client needs; `ApiError` for every failure."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from service.states import FINAL_STUDY_STATUSES

API_PREFIX = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8000"
FINAL_STATUSES = frozenset(FINAL_STUDY_STATUSES)
"""A study in one of these statuses will not change again."""


class ApiError(Exception):
    """A request that failed; `status_code` is None when the server could not be reached."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def connection_settings(url: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """The server URL and token: arguments, else `HPS_URL` / `HPS_API_TOKEN` (its first token),
    else the local default with the token a local server stored in `HPS_DATA_DIR/api-token`."""
    chosen_url = (url or os.environ.get("HPS_URL") or DEFAULT_URL).rstrip("/")
    chosen_token = token or _first_token(os.environ.get("HPS_API_TOKEN"))
    if chosen_token is None:
        token_file = Path(os.environ.get("HPS_DATA_DIR", "hpsearch-data")) / "api-token"
        try:
            chosen_token = token_file.read_text(encoding="ascii").strip() or None
        except OSError:
            chosen_token = None
    return chosen_url, chosen_token


def _first_token(tokens: str | None) -> str | None:
    return next((t.strip() for t in (tokens or "").split(",") if t.strip()), None)


class ApiClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=f"{self.url}{API_PREFIX}",
            headers=headers,
            timeout=timeout_s,
            transport=transport,
        )

    @classmethod
    def connect(cls, url: str | None = None, token: str | None = None) -> ApiClient:
        """A client for `url`/`token`, or what the environment names (see connection_settings)."""
        return cls(*connection_settings(url, token))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- studies -------------------------------------------------------------------------------

    def submit_study(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/studies", json=spec)

    def list_studies(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self._json("GET", "/studies", params=params)

    def get_study(self, study_id: int) -> dict[str, Any]:
        return self._json("GET", f"/studies/{study_id}")

    def cancel_study(self, study_id: int) -> dict[str, Any]:
        return self._json("POST", f"/studies/{study_id}/cancel")

    def get_pareto(self, study_id: int) -> dict[str, Any]:
        """The study's Pareto front: its non-dominated complete trials and its objectives."""
        return self._json("GET", f"/studies/{study_id}/pareto")

    def get_report(self, study_id: int) -> dict[str, Any]:
        return self._json("GET", f"/studies/{study_id}/report")

    def extend_study(self, study_id: int, n_trials: int) -> dict[str, Any]:
        return self._json("POST", f"/studies/{study_id}/extend", json={"n_trials": n_trials})

    def watch_study(self, study_id: int, *, poll_s: float = 0.5) -> Iterator[dict[str, Any]]:
        """The study (as `get_study` returns it) every `poll_s` seconds, until and including
        the first snapshot in a final status (`FINAL_STATUSES`)."""
        while True:
            study = self.get_study(study_id)
            yield study
            if study["status"] in FINAL_STATUSES:
                return
            time.sleep(poll_s)

    def wait_for_study(self, study_id: int, *, poll_s: float = 0.5) -> dict[str, Any]:
        """Block until the study is completed, failed or cancelled; return it then."""
        final: dict[str, Any] = deque(self.watch_study(study_id, poll_s=poll_s), maxlen=1)[0]
        return final

    def delete_study(self, study_id: int) -> None:
        self._request("DELETE", f"/studies/{study_id}")

    def export_study(self, study_id: int, format: Literal["csv", "json"] = "csv") -> bytes:
        response = self._request("GET", f"/studies/{study_id}/export", params={"format": format})
        return response.content

    # --- trials --------------------------------------------------------------------------------

    def list_trials(
        self,
        study_id: int,
        *,
        state: str | None = None,
        sort: str = "number",
        order: str = "asc",
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"sort": sort, "order": order, "limit": limit, "offset": offset}
        if state:
            params["state"] = state
        return self._json("GET", f"/studies/{study_id}/trials", params=params)

    def get_trial(self, study_id: int, number: int) -> dict[str, Any]:
        return self._json("GET", f"/studies/{study_id}/trials/{number}")

    def download_checkpoint(self, study_id: int, number: int) -> bytes:
        return self._request("GET", f"/studies/{study_id}/trials/{number}/checkpoint").content

    # --- the rest ------------------------------------------------------------------------------

    def list_workers(self) -> dict[str, Any]:
        return self._json("GET", "/workers")

    def list_plugins(self) -> dict[str, Any]:
        return self._json("GET", "/plugins")

    # --- tokens (admin) ----------------------------------------------------------------------

    def issue_token(
        self,
        name: str,
        scope: str = "write",
        max_priority: int | None = None,
        max_queued_trials: int | None = None,
    ) -> dict[str, Any]:
        body = {
            "name": name,
            "scope": scope,
            "max_priority": max_priority,
            "max_queued_trials": max_queued_trials,
        }
        return self._json("POST", "/tokens", json=body)

    def list_tokens(self) -> list[dict[str, Any]]:
        tokens: list[dict[str, Any]] = self._request("GET", "/tokens").json()
        return tokens

    def revoke_token(self, name: str) -> dict[str, Any]:
        return self._json("DELETE", f"/tokens/{name}")

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(
                f"{self.url} answered {method} {path} with something other than a JSON object; "
                "is it an hpsearch server? Set --url or HPS_URL",
                response.status_code,
            )
        return body

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ApiError(
                f"cannot reach the hpsearch server at {self.url} ({error}); is it running? "
                "Set --url or HPS_URL"
            ) from None
        if response.is_success:
            return response
        raise ApiError(_describe(response), response.status_code)


def _describe(response: httpx.Response) -> str:
    """One readable line for a failed response."""
    try:
        detail: Any = response.json().get("detail")
    except ValueError:
        detail = response.text.strip()[:200] or response.reason_phrase
    if response.status_code == 401:
        return f"the server refused the token ({detail}); set --token or HPS_API_TOKEN"
    if isinstance(detail, list):
        problems = [
            f"{_path(item.get('loc', []))}: {item.get('msg')}"
            for item in detail
            if isinstance(item, dict)
        ]
        return f"{response.status_code}: " + "; ".join(problems)
    return f"{response.status_code}: {detail}"


def _path(location: list[Any]) -> str:
    """["body", "search_space", "lambda", "low"] -> "search_space.lambda.low"."""
    return ".".join(str(part) for part in location[1:]) or "body"

"""A typed client of hpsearch's REST API (httpx), for the CLI, the CI gate and scripts.

    with ApiClient.connect() as api:          # HPS_URL / HPS_API_TOKEN, or the local token file
        study = api.submit_study(spec)
        api.get_study(study["id"])

Every failure (server unreachable, token refused, 404, 409, 422) is an `ApiError` whose message
is one readable line; 422s name the JSON path of each offending field.
"""

from service.client.api import FINAL_STATUSES, ApiClient, ApiError, connection_settings

__all__ = ["FINAL_STATUSES", "ApiClient", "ApiError", "connection_settings"]

"""A page of trials as JSON bytes, from rows whose params and metrics are stored JSON text.

The trials list is the API's hottest read (a dashboard or a client paging a 10,000-trial
study). Decoding each row's params and metrics only to validate them into models and encode
them again took most of a page's server time, so the stored JSON is spliced in as it is and
only the scalar columns go through pydantic's encoder. The result is the JSON of
`Page[TrialRead]` (a test holds the two equal); pydantic has no way to embed JSON text, hence
the splicing by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic_core import to_json
from sqlalchemy import RowMapping

_SCALARS = (
    "id",
    "number",
    "state",
    "value",
    "epochs_run",
    "best_epoch",
    "stopped_early",
    "diagnosis",
    "device",
    "duration_s",
    "retry_of_id",
    "started_at",
    "finished_at",
)


def trial_page_json(rows: Sequence[RowMapping], total: int, limit: int, offset: int) -> bytes:
    """`{"items": [...], "total", "limit", "offset"}` as `Page[TrialRead]` would encode it."""
    items = b",".join(_trial_json(row) for row in rows)
    tail = to_json({"total": total, "limit": limit, "offset": offset})
    return b'{"items":[' + items + b"]," + tail[1:]


def _trial_json(row: RowMapping) -> bytes:
    # Non-finite floats become null, as pydantic models encode them (the stored JSON never
    # holds any: the worker writes only finite metrics).
    scalars = to_json({name: row[name] for name in _SCALARS}, inf_nan_mode="null")
    metrics: str | None = row["metrics"]
    return b"".join(
        (
            scalars[:-1],
            b',"params":',
            row["params"].encode(),
            b',"metrics":',
            b"null" if metrics is None else metrics.encode(),
            b"}",
        )
    )

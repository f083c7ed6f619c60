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
from typing import Any

from pydantic_core import to_json

from service.db.repositories import JSON_TEXT_SCALARS
from service.studies.schemas import split_problem_labels


def trial_page_json(rows: Sequence[tuple[Any, ...]], total: int, limit: int, offset: int) -> bytes:
    """`{"items": [...], "total", "limit", "offset"}` as `Page[TrialRead]` would encode it."""
    items = b",".join(_trial_json(row) for row in rows)
    tail = to_json({"total": total, "limit": limit, "offset": offset})
    return b'{"items":[' + items + b"]," + tail[1:]


def _trial_json(row: tuple[Any, ...]) -> bytes:
    """One row of `JsonTextPage.rows`: the scalars, then params and metrics as JSON text."""
    # Non-finite floats become null, as pydantic models encode them (the stored JSON never
    # holds any: the worker writes only finite metrics).
    values = dict(zip(JSON_TEXT_SCALARS, row, strict=False))
    values["problem_labels"] = split_problem_labels(values["problem_labels"])
    scalars = to_json(values, inf_nan_mode="null")
    params: str = row[-2]
    metrics: str | None = row[-1]
    return b"".join(
        (
            scalars[:-1],
            b',"params":',
            params.encode(),
            b',"metrics":',
            b"null" if metrics is None else metrics.encode(),
            b"}",
        )
    )

"""Columns packed for the wire: the dashboard reads whole studies (10,000 trials and more), so
repeated strings go as indices into their labels and floats with the digits a plot can show."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

PLOT_DIGITS = 6
"""Significant digits of a float sent for plotting (float32 carries about 7)."""


def rounded(values: Iterable[float | None], digits: int = PLOT_DIGITS) -> list[float | None]:
    """`values` to `digits` significant digits (None stays None): '0.123457', not
    '0.12345678901234567', in the JSON."""
    return [None if value is None else float(f"{value:.{digits}g}") for value in values]


def coded(values: Sequence[str | None]) -> tuple[list[int | None], list[str]]:
    """Each value as an index into the returned labels (first seen first); None stays None."""
    index: dict[str, int] = {}
    codes: list[int | None] = []
    for value in values:
        if value is None:
            codes.append(None)
            continue
        code = index.get(value)
        if code is None:
            code = index[value] = len(index)
        codes.append(code)
    return codes, list(index)

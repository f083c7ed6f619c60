"""The one error the gate raises for anything that stops it from deciding (exit code 2)."""

from __future__ import annotations


class GateError(Exception):
    """The gate cannot decide: a bad file, a failed study, an unreachable server...

    The message is one line a CI log can show as it is.
    """

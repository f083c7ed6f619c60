"""SpecError: a problem in a study spec, located by its JSON path from the spec's root."""

from __future__ import annotations


class SpecError(ValueError):
    """A spec error at a JSON path, e.g. ("search_space", "initializer", "choices", 0).

    Pydantic keeps the exception in the error's ``ctx["error"]``, so an API can report `path`.
    """

    def __init__(self, path: tuple[str | int, ...], reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{dotted(path)}: {reason}")


def dotted(path: tuple[str | int, ...]) -> str:
    """("search_space", "initializer", "choices", 0) -> "search_space.initializer.choices[0]"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text

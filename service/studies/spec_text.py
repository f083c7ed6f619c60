"""A spec pasted as text (JSON or YAML) read safely: no YAML aliases, bounded nesting.

YAML aliases let 400 bytes expand into hundreds of megabytes (the "billion laughs"); a spec
never needs them. Deep nesting makes both parsers recurse until RecursionError."""

from __future__ import annotations

import json
from typing import Any

import yaml

from service.studies.errors import InvalidInputError, Issue


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stubs
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted in a spec", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_spec_text(text: str) -> dict[str, Any]:
    """The mapping `text` holds, as JSON or else YAML; `InvalidInputError` naming the problem."""
    try:
        try:
            spec = json.loads(text)
        except ValueError:
            try:
                spec = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader
            except yaml.YAMLError as error:
                raise InvalidInputError(
                    [Issue(("body",), f"neither JSON nor YAML: {error}")]
                ) from None
    except RecursionError:
        raise InvalidInputError([Issue(("body",), "the spec is nested too deeply")]) from None
    if not isinstance(spec, dict):
        raise InvalidInputError([Issue(("body",), "a spec is a mapping (an object)")])
    return spec

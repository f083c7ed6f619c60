"""Pydantic's errors as `{"loc": ["body", ...JSON path], "msg": ..., "type": ...}`.

Pydantic's `loc` is a path through the *schema*: besides field names and list indexes it holds
union members (`"float"` for a discriminated search-space parameter, `"UploadedDataset"` for the
dataset union). A client wants the path through *its JSON*, so each `loc` is walked through the
request body and the entries that are not keys or indexes there are dropped. When pydantic
reports every member of a union, only the member that came closest is kept (fewest errors
saying "wrong shape": unknown or missing fields, wrong container type): `{"dataset": {"id": 0}}`
reports `id` must be >= 1, not that the built-in data set takes no `id`.

A `SpecError` raised by the trainer's validators carries its own path from the spec's root;
it is reported there, with its reason as the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from service.studies import Issue, SpecError

_MISSING = {"missing", "missing_argument", "missing_keyword_argument"}
_WRONG_SHAPE = _MISSING | {
    "extra_forbidden",
    "unexpected_keyword_argument",
    "union_tag_invalid",
    "model_type",
    "model_attributes_type",
    "dataclass_type",
    "dict_type",
}
_PREFIXES = ("Value error, ", "Assertion failed, ")
_SHOULD_BE = "Input should be "

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class _Error:
    order: int
    loc: Loc
    path: Loc
    """`loc` without its union-member entries."""
    members: tuple[int, ...]
    """Indexes into `loc` of the union members not yet resolved."""
    msg: str
    type: str


def error_details(errors: Sequence[Mapping[str, Any]], body: Any) -> list[dict[str, Any]]:
    """FastAPI/pydantic errors for a request whose parsed body was `body`."""
    located = [_locate(order, error, body) for order, error in enumerate(errors)]
    kept = sorted(_closest_members(located), key=lambda e: e.order)
    details: list[dict[str, Any]] = []
    for error in kept:
        detail = {"loc": list(error.path), "msg": error.msg, "type": error.type}
        if detail not in details:
            details.append(detail)
    return details


def issue_details(issues: Iterable[Issue]) -> list[dict[str, Any]]:
    """A use case's `Issue`s in the same shape (their paths within the body or the query)."""
    return [{"loc": [i.where, *i.path], "msg": i.reason, "type": i.type} for i in issues]


def _locate(order: int, error: Mapping[str, Any], body: Any) -> _Error:
    loc: Loc = tuple(error["loc"])
    kind: str = error["type"]
    cause = (error.get("ctx") or {}).get("error")
    walked = _walk(order, loc, kind, _message(error["msg"], kind, cause), body)
    if isinstance(cause, SpecError):
        # its own path from the spec's root, but still a member of any union it was raised in
        return replace(walked, path=("body", *cause.path), msg=cause.reason)
    return walked


def _message(msg: str, kind: str, cause: Any) -> str:
    for prefix in _PREFIXES:
        msg = msg.removeprefix(prefix)
    if kind == "json_invalid" and isinstance(cause, str):
        msg = f"{msg}: {cause}"
    return msg


def _walk(order: int, loc: Loc, kind: str, msg: str, body: Any) -> _Error:
    """`loc` walked through the request body: its JSON path and its union members."""
    if not loc or loc[0] != "body":
        return _Error(order, loc, loc, (), msg, kind)
    kept: list[str | int] = ["body"]
    members: list[int] = []
    node = body
    for index in range(1, len(loc)):
        part = loc[index]
        if _holds(node, part):
            node = node[part]
        elif isinstance(node, Mapping | list) and not (index == len(loc) - 1 and kind in _MISSING):
            members.append(index)  # a union member: not a key or index of the client's JSON
            continue
        else:  # below a scalar, or the missing field itself: keep the rest as pydantic says
            kept.extend(loc[index:])
            break
        kept.append(part)
    return _Error(order, loc, tuple(kept), tuple(members), msg, kind)


def _holds(node: Any, part: str | int) -> bool:
    """Whether `part` is a key of the JSON object or an index of the JSON array `node`."""
    if isinstance(node, Mapping):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node)


def _closest_members(errors: list[_Error]) -> list[_Error]:
    """Of each union pydantic reported member by member, the errors of the closest members."""
    result = [e for e in errors if not e.members]
    unions: dict[Loc, dict[str | int, list[_Error]]] = {}
    for error in errors:
        if error.members:
            at = error.members[0]
            unions.setdefault(error.loc[:at], {}).setdefault(error.loc[at], []).append(error)
    for members in unions.values():
        best = min(_distance(group) for group in members.values())
        closest: list[_Error] = []
        for group in members.values():
            if _distance(group) == best:
                closest.extend(_closest_members([replace(e, members=e.members[1:]) for e in group]))
        result.extend(_merge_alternatives(closest))
    return result


def _merge_alternatives(errors: list[_Error]) -> list[_Error]:
    """Equally close members failing at one path become one error: for a choice that may be
    a boolean, number or string, "Input should be a valid boolean, a valid integer, ..."."""
    by_path: dict[Loc, list[_Error]] = {}
    for error in errors:
        by_path.setdefault(error.path, []).append(error)
    merged: list[_Error] = []
    for group in by_path.values():
        messages = list(dict.fromkeys(e.msg for e in group))
        if len(messages) == 1:
            merged.append(group[0])
            continue
        wanted = [m.removeprefix(_SHOULD_BE) for m in messages]
        text = ", ".join(wanted[:-1]) + f" or {wanted[-1]}"
        if all(m.startswith(_SHOULD_BE) for m in messages):
            text = _SHOULD_BE + text
        merged.append(replace(group[0], msg=text, type="union_type"))
    return merged


def _distance(group: list[_Error]) -> tuple[int, int]:
    return sum(e.type in _WRONG_SHAPE for e in group), len(group)

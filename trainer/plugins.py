"""Installed plugins: Python entry points, the one way code joins the registries.

A package declares, in its `pyproject.toml`,

    [project.entry-points."hpsearch.models"]
    resmlp = "my_package.models:build_resmlp"

and a spec then says `"model": {"type": "resmlp"}`. The groups and the registries they fill:
`hpsearch.models`, `hpsearch.datasets`, `hpsearch.initializers`, `hpsearch.regularizers`.

`activate(allowed)` loads the installed plugins whose entry-point names are allowed (None: all)
and registers them; a plugin that fails to import, or whose name a built-in already has, is
logged with the reason and left out, never raised. The registries call `activate(None)` before
their first lookup if nothing activated them: the service activates its `HPS_PLUGINS` list at
start, before any lookup.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from trainer import datasets, initializers, networks, regularizers
from trainer._registry import Registry
from trainer.networks import config_json_schema

logger = logging.getLogger(__name__)

GROUPS: dict[str, tuple[str, Registry[Any]]] = {
    "hpsearch.models": ("model", networks.registry),
    "hpsearch.datasets": ("dataset", datasets.registry),
    "hpsearch.initializers": ("initializer", initializers.registry),
    "hpsearch.regularizers": ("regularizer", regularizers.registry),
}
"""Entry-point group → (the kind a spec names, the registry it joins)."""


@dataclass(frozen=True)
class PluginInfo:
    """One installed entry point, loaded or not."""

    group: str
    kind: str
    name: str
    value: str
    """The entry point's `module:attribute` (shown to operators, never taken from a spec)."""
    distribution: str | None
    version: str | None
    status: str
    """"loaded", "not_allowed" (outside the allow-list) or "failed" (see `error`)."""
    error: str | None = None
    config_schema: dict[str, Any] | None = field(default=None, compare=False)
    description: str | None = None


@dataclass
class _State:
    allowed: frozenset[str] | None = None
    activated: bool = False
    infos: tuple[PluginInfo, ...] = ()
    registered: list[tuple[Registry[Any], str]] = field(default_factory=list)


_state = _State()
_lock = threading.RLock()


def activate(
    allowed: Collection[str] | None = None, *, rescan: bool = False
) -> tuple[PluginInfo, ...]:
    """Register the installed plugins named in `allowed` (None: every installed one).

    Calling it again with the same list does nothing unless `rescan` (a package installed
    since); with another list, the plugins of the previous one leave the registries first.
    """
    wanted = None if allowed is None else frozenset(allowed)
    with _lock:
        if _state.activated and _state.allowed == wanted and not rescan:
            return _state.infos
        for registry, name in _state.registered:
            registry.unregister(name)
        _state.registered.clear()
        _state.allowed, _state.activated = wanted, True
        _state.infos = tuple(_load(group, point, wanted) for group, point in _entry_points())
        for name in sorted((wanted or frozenset()) - {i.name for i in _state.infos}):
            logger.warning("HPS_PLUGINS names %r, but no installed plugin has that name", name)
        return _state.infos


def installed() -> tuple[PluginInfo, ...]:
    """Every installed entry point of the four groups, with its status."""
    _ensure_active()
    return _state.infos


def why_unavailable(kind: str, name: str) -> str | None:
    """Why a name a spec used is not registered, when a plugin explains it."""
    for info in installed():
        if info.kind == kind and info.name == name:
            if info.status == "not_allowed":
                return "installed, but not in this server's plugin allow-list HPS_PLUGINS"
            if info.status == "failed":
                return f"its plugin failed to load: {info.error}"
    return None


def versions_of(used: Collection[tuple[str, str]]) -> dict[str, str]:
    """Distribution name → version of the plugins behind the (kind, name) pairs `used`."""
    versions: dict[str, str] = {}
    for info in installed():
        if info.status == "loaded" and (info.kind, info.name) in used and info.distribution:
            versions[info.distribution] = info.version or "unknown"
    return versions


def _ensure_active() -> None:
    with _lock:
        if not _state.activated:
            activate(None)


def _entry_points() -> list[tuple[str, EntryPoint]]:
    found = []
    for group in GROUPS:
        for point in sorted(entry_points(group=group), key=lambda p: p.name):
            found.append((group, point))
    return found


def _load(group: str, point: EntryPoint, allowed: frozenset[str] | None) -> PluginInfo:
    kind, registry = GROUPS[group]
    distribution = point.dist.name if point.dist is not None else None
    version = point.dist.version if point.dist is not None else None

    def info(status: str, error: str | None = None, target: Any = None) -> PluginInfo:
        doc = (getattr(target, "__doc__", None) or "").strip().splitlines()
        return PluginInfo(
            group,
            kind,
            point.name,
            point.value,
            distribution,
            version,
            status,
            error,
            None if target is None else config_json_schema(target),
            doc[0] if doc else None,
        )

    if allowed is not None and point.name not in allowed:
        return info("not_allowed")
    try:
        target = point.load()
    except Exception as error:
        logger.error(
            "plugin %s %r (%s) failed to import; left out:\n%s",
            kind,
            point.name,
            point.value,
            traceback.format_exc(),
        )
        return info("failed", f"{type(error).__name__}: {error}")
    if not callable(target):
        message = f"{point.value} is not callable"
        logger.error("plugin %s %r left out: %s", kind, point.name, message)
        return info("failed", message)
    try:
        registry.register(point.name)(target)
    except ValueError as error:  # a name a built-in (or another plugin) already has
        logger.error("plugin %s %r left out: %s", kind, point.name, error)
        return info("failed", str(error))
    _state.registered.append((registry, point.name))
    logger.info("plugin %s %r loaded from %s %s", kind, point.name, distribution, version)
    return info("loaded", target=target)


for _group, (_kind, _registry) in GROUPS.items():
    _registry.load_before_lookup(_ensure_active)

"""Installed plugins: load the server's allow-list, and list what is installed."""

from __future__ import annotations

import logging

from service.config import Settings
from service.studies.schemas import PluginList, PluginRead
from trainer import activate_plugins, installed_plugins

logger = logging.getLogger(__name__)


def load_plugins(settings: Settings) -> PluginList:
    """Register the plugins `HPS_PLUGINS` allows (all installed ones when unset).

    The server and every worker call this at start, so both resolve a spec's names alike; a
    plugin that fails to import is logged and left out (see `trainer.plugins`)."""
    infos = activate_plugins(settings.plugin_allow_list)
    loaded = [
        f"{i.kind} {i.name} ({i.distribution} {i.version})" for i in infos if i.status == "loaded"
    ]
    if loaded:
        logger.info("plugins: %s", ", ".join(loaded))
    return list_plugins(settings)


def list_plugins(settings: Settings) -> PluginList:
    """Every installed plugin of the four groups, loaded, left out by the allow-list, or
    failed (with why)."""
    allowed = settings.plugin_allow_list
    return PluginList(
        allow_list=None if allowed is None else sorted(allowed),
        plugins=[PluginRead.model_validate(i, from_attributes=True) for i in installed_plugins()],
    )

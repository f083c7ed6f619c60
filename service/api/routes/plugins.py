"""/plugins: the installed models, datasets, initializers and regularizers a spec can name."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ReadAccess, SettingsDep
from service.api.paths import API_PREFIX
from service.studies import list_plugins
from service.studies.schemas import PluginList

router = APIRouter(prefix=f"{API_PREFIX}/plugins", tags=["plugins"], dependencies=[ReadAccess])


@router.get("")
def list_(settings: SettingsDep) -> PluginList:
    """Every installed plugin: its group, name, distribution and version, its config's JSON
    schema, and whether this server loaded it (`loaded`), left it out (`not_allowed`: not in
    `HPS_PLUGINS`) or could not import it (`failed`, with the error)."""
    return list_plugins(settings)

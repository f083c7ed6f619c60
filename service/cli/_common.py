"""What every `hpsearch` command shares: the consoles and reading a JSON/YAML document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console

console = Console()
error_console = Console(stderr=True)


def load_document(path: Path) -> dict[str, Any]:
    """A JSON (by suffix) or YAML file holding one object; a clear BadParameter otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise typer.BadParameter(f"cannot read {path}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise typer.BadParameter(f"{path} is not valid JSON/YAML: {error}") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} must hold a JSON/YAML object")
    return data

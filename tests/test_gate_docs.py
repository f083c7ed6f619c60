"""docs/ci-gate.md stays true: its workflow is the example file, the workflow uses only options
`hpsearch regress` has, and the options table lists every one of them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main
import yaml

from service.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ci-gate.md"
WORKFLOW = ROOT / "docs" / "examples" / "regression-gate.yml"


def regress_options() -> set[str]:
    """Every flag of `hpsearch regress` (typer ships its own click, so read it by duck typing)."""
    group: Any = typer.main.get_command(app)
    command = group.commands["regress"]
    return {
        option
        for param in command.params
        if param.param_type_name == "option"
        for option in param.opts
        if option != "--help"
    }


def test_the_doc_shows_the_example_workflow_verbatim() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert blocks == [WORKFLOW.read_text()]


def test_the_workflow_gates_pull_requests_and_reports() -> None:
    workflow: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    steps = workflow["jobs"]["regress"]["steps"]
    scripts = [step.get("run", "") for step in steps]
    gate = next(script for script in scripts if "hpsearch regress" in script)
    used = set(re.findall(r"--[a-z-]+", gate))
    assert used <= regress_options()
    assert {"--junit", "--summary", "--spec", "--baseline"} <= used
    assert any('>> "$GITHUB_STEP_SUMMARY"' in script for script in scripts)
    upload = next(step for step in steps if str(step.get("uses", "")).startswith("actions/upload"))
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "reports/"


def test_the_options_table_lists_every_option() -> None:
    text = DOC.read_text()
    for option in regress_options():
        assert f"`{option}" in text, option

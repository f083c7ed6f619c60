"""The shipped example specs are valid studies, and say what the docs say they do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.studies.spec import StudySpec

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.json"))


def test_the_examples_are_there() -> None:
    assert {p.name for p in EXAMPLES} >= {"digits-techniques.json", "digits-cnn.json"}


PLUGIN_EXAMPLES = {"diabetes-resmlp.json"}  # name the example plugin package's model and data


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_is_a_valid_study(path: Path) -> None:
    if path.name in PLUGIN_EXAMPLES:
        from tests.conftest import require
        from tests.test_plugins import example_plugins_installed

        require(example_plugins_installed(), "the example plugins are not installed")
    spec = StudySpec.model_validate(json.loads(path.read_text()))
    template = spec.template()
    config = template.config_for({})  # the fixed values alone also make a trial
    assert config.max_epochs == spec.budget.max_epochs


def test_the_cnn_example_maximizes_accuracy() -> None:
    spec = StudySpec.model_validate(
        json.loads((EXAMPLES[0].parent / "digits-cnn.json").read_text())
    )
    assert spec.model.type == "cnn"
    assert spec.primary.resolved_direction == "maximize"


def test_the_plugin_guide_shows_the_example_as_it_is() -> None:
    readme = (EXAMPLES[0].parents[1] / "docs" / "plugins.md").read_text()
    start = readme.index("**4. Submit**")
    block = readme[
        readme.index("```json", start) + len("```json") : readme.index("```\n", start + 30)
    ]
    assert json.loads(block) == json.loads(
        (EXAMPLES[0].parent / "diabetes-resmlp.json").read_text()
    )

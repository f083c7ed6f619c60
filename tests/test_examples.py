"""The shipped example specs are valid studies, and say what the docs say they do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.studies.spec import StudySpec

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.json"))


def test_the_examples_are_there() -> None:
    assert {p.name for p in EXAMPLES} >= {"digits-techniques.json", "digits-cnn.json"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_is_a_valid_study(path: Path) -> None:
    spec = StudySpec.model_validate(json.loads(path.read_text()))
    template = spec.template()
    config = template.config_for({})  # the fixed values alone also make a trial
    assert config.max_epochs == spec.budget.max_epochs


def test_the_cnn_example_maximizes_accuracy() -> None:
    spec = StudySpec.model_validate(
        json.loads((EXAMPLES[0].parent / "digits-cnn.json").read_text())
    )
    assert spec.model.type == "cnn"
    assert spec.objective.resolved_direction == "maximize"

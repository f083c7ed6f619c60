"""The grid sampler's values: enumerated exactly when the grid is small, refused by its size
(counted, not built) when it is not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.studies.spec import MAX_GRID_POINTS, StudySpec


def grid_spec(**space: object) -> dict[str, object]:
    return {"name": "grid", "sampler": {"name": "grid"}, "search_space": space}


def test_a_small_grid_lists_every_value() -> None:
    spec = StudySpec.model_validate(
        grid_spec(
            optimizer={"type": "categorical", "choices": ["sgd", "adam"]},
            units={"type": "int", "low": 16, "high": 64, "step": 16},
            dropout={"type": "float", "low": 0.0, "high": 0.5, "step": 0.25},
        )
    )
    values = spec.grid_values()
    assert values["optimizer"] == ["sgd", "adam"]
    assert values["units"] == [16, 32, 48, 64]
    assert values["dropout"] == pytest.approx([0.0, 0.25, 0.5])


def test_the_cap_is_exact_and_a_tiny_step_is_refused_without_building_it() -> None:
    # a step of 0.5 / 99,999 gives 100,000 values (at the cap); 5e-6 gives 100,001 (over it)
    at_cap = grid_spec(dropout={"type": "float", "low": 0.0, "high": 0.5, "step": 0.5 / 99_999})
    assert len(StudySpec.model_validate(at_cap).grid_values()["dropout"]) == MAX_GRID_POINTS
    over = grid_spec(dropout={"type": "float", "low": 0.0, "high": 0.5, "step": 5e-6})
    with pytest.raises(ValidationError, match="more than 100,000 points"):
        StudySpec.model_validate(over)
    endless = grid_spec(dropout={"type": "float", "low": 0.0, "high": 0.5, "step": 1e-300})
    with pytest.raises(ValidationError, match="more than 100,000 points"):
        StudySpec.model_validate(endless)  # 5e299 values: counted, never listed

"""The declarative search space: what parses, what is refused (and why), define-by-run sampling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from trainer.space import CategoricalParam, Choice, FloatParam, IntParam, SearchSpace

OPTIMIZER: dict[str, Any] = {"type": "categorical", "choices": ["sgd", "momentum", "adam"]}
MOMENTUM: dict[str, Any] = {
    "type": "float",
    "low": 0.5,
    "high": 0.99,
    "when": {"optimizer": ["momentum"]},
}


class FakeSuggester:
    """A `Suggester` returning scripted values and recording every call, in order.

    An unscripted name raises KeyError, so sampling an inactive parameter fails the test.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self.calls.append(("float", name, {"low": low, "high": high, "step": step, "log": log}))
        value: float = self.values[name]
        return value

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        self.calls.append(("int", name, {"low": low, "high": high, "step": step, "log": log}))
        value: int = self.values[name]
        return value

    def suggest_categorical(self, name: str, choices: Sequence[Choice]) -> Choice:
        self.calls.append(("categorical", name, {"choices": list(choices)}))
        value: Choice = self.values[name]
        return value

    @property
    def names(self) -> list[str]:
        return [name for _, name, _ in self.calls]


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "fields"),
    [
        (
            {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            FloatParam,
            {"low": 1e-4, "high": 0.1, "log": True, "step": None, "when": None},
        ),
        (
            {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
            FloatParam,
            {"low": 0.0, "high": 0.5, "step": 0.1, "log": False},
        ),
        ({"type": "float", "low": 0.3, "high": 0.3}, FloatParam, {"low": 0.3, "high": 0.3}),
        (
            {"type": "int", "low": 16, "high": 256, "log": True},
            IntParam,
            {"low": 16, "high": 256, "log": True, "step": 1},
        ),
        (
            {"type": "int", "low": 1, "high": 7, "step": 2},
            IntParam,
            {"low": 1, "high": 7, "step": 2, "log": False},
        ),
        ({"type": "int", "low": -3, "high": 3}, IntParam, {"low": -3, "high": 3, "step": 1}),
        (
            {"type": "categorical", "choices": ["sgd", "adam"]},
            CategoricalParam,
            {"choices": ["sgd", "adam"], "when": None},
        ),
        (
            {"type": "categorical", "choices": [32, 64, 128]},
            CategoricalParam,
            {"choices": [32, 64, 128]},
        ),
        (
            {"type": "categorical", "choices": [None, "l2", 0.5]},
            CategoricalParam,
            {"choices": [None, "l2", 0.5]},
        ),
    ],
)
def test_valid_parameter_parses(spec: dict[str, Any], kind: type, fields: dict[str, Any]) -> None:
    space = SearchSpace.model_validate({"x": spec})
    param = space["x"]
    assert isinstance(param, kind)
    for field, expected in fields.items():
        assert getattr(param, field) == expected, field
    assert list(space) == ["x"]
    assert len(space) == 1


def test_conditional_space_parses_with_its_conditions() -> None:
    space = SearchSpace.model_validate({"optimizer": OPTIMIZER, "momentum": MOMENTUM})
    assert space["momentum"].when == {"optimizer": ["momentum"]}
    assert space["optimizer"].when is None
    assert list(space) == ["optimizer", "momentum"]


def test_empty_space_is_valid_and_samples_nothing() -> None:
    space = SearchSpace.model_validate({})
    suggester = FakeSuggester({})
    assert space.sample(suggester) == {}
    assert suggester.calls == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"x": {"type": "float", "low": 2.0, "high": 1.0}},
            "low (2.0) must not exceed high (1.0)",
            id="float-low-above-high",
        ),
        pytest.param(
            {"x": {"type": "int", "low": 5, "high": 4}},
            "low (5) must not exceed high (4)",
            id="int-low-above-high",
        ),
        pytest.param(
            {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": True}},
            "a log-scale range needs low > 0, got 0.0",
            id="float-log-low-zero",
        ),
        pytest.param(
            {"x": {"type": "float", "low": -1.0, "high": 1.0, "log": True}},
            "a log-scale range needs low > 0",
            id="float-log-low-negative",
        ),
        pytest.param(
            {"x": {"type": "int", "low": 0, "high": 10, "log": True}},
            "a log-scale range needs low >= 1, got 0",
            id="int-log-low-zero",
        ),
        pytest.param(
            {"x": {"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1}},
            "step and log cannot be combined",
            id="float-step-with-log",
        ),
        pytest.param(
            {"x": {"type": "int", "low": 1, "high": 64, "log": True, "step": 2}},
            "step and log cannot be combined",
            id="int-step-with-log",
        ),
        pytest.param(
            {"x": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.0}},
            "greater than 0",
            id="float-step-zero",
        ),
        pytest.param(
            {"x": {"type": "int", "low": 0, "high": 10, "step": 0}},
            "greater than or equal to 1",
            id="int-step-zero",
        ),
        pytest.param(
            {"x": {"type": "float", "low": float("nan"), "high": 1.0}},
            "low and high must be finite numbers",
            id="float-nan",
        ),
        pytest.param(
            {"x": {"type": "int", "low": 1.5, "high": 3}},
            "valid integer",
            id="int-fractional-bound",
        ),
        pytest.param(
            {"x": {"type": "categorical", "choices": []}},
            "at least 1 item",
            id="empty-choices",
        ),
        pytest.param(
            {"x": {"type": "categorical", "choices": ["adam", "sgd", "adam"]}},
            "choices must be distinct",
            id="duplicate-choices",
        ),
        pytest.param(
            {"x": {"type": "categorical", "choices": [32, 64, 32]}},
            "choices must be distinct",
            id="duplicate-int-choices",
        ),
        pytest.param(
            {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
            "does not match any of the expected tags: 'categorical', 'int', 'float'",
            id="unknown-type",
        ),
        pytest.param({"x": {"low": 0.0, "high": 1.0}}, "type", id="missing-type"),
        pytest.param(
            {"x": {"type": "float", "low": 0.0, "high": 1.0, "scale": "log"}},
            "Extra inputs are not permitted",
            id="extra-field",
        ),
        pytest.param(
            {"x": {"type": "float", "low": 0.0, "high": 1.0, "when": {"optimizer": ["sgd"]}}},
            "'x': 'when' refers to 'optimizer', which is not in the search space",
            id="when-undefined-parent",
        ),
        pytest.param(
            {
                "optimizer": OPTIMIZER,
                "momentum": {**MOMENTUM, "when": {"optimizer": ["momentum", "nadam"]}},
            },
            "'momentum': 'when' 'optimizer' values ['nadam'] are not among its choices",
            id="when-value-not-a-choice",
        ),
        pytest.param(
            {"x": {"type": "categorical", "choices": ["a", "b"], "when": {"x": ["a"]}}},
            "'x': 'when' refers to the parameter itself",
            id="when-on-itself",
        ),
        pytest.param(
            {
                "a": {"type": "categorical", "choices": [1, 2], "when": {"b": ["x"]}},
                "b": {"type": "categorical", "choices": ["x", "y"], "when": {"a": [1]}},
            },
            "conditions form a cycle: a -> b -> a",
            id="two-cycle",
        ),
        pytest.param(
            {
                "a": {"type": "categorical", "choices": [1, 2], "when": {"c": [True]}},
                "b": {"type": "categorical", "choices": ["x", "y"], "when": {"a": [1]}},
                "c": {"type": "categorical", "choices": [True, False], "when": {"b": ["y"]}},
            },
            "conditions form a cycle: a -> c -> b -> a",
            id="three-cycle",
        ),
        pytest.param(
            {"optimizer": OPTIMIZER, "momentum": {**MOMENTUM, "when": {"optimizer": []}}},
            "'when' condition on 'optimizer' lists no values",
            id="when-empty-values",
        ),
    ],
)
def test_invalid_space_is_refused_with_a_readable_message(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as error:
        SearchSpace.model_validate(spec)
    assert message in str(error.value)


# --- sampling ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("optimizer", "sampled"),
    [
        ("sgd", ["optimizer", "learning_rate"]),
        ("momentum", ["optimizer", "momentum", "learning_rate"]),
        ("adam", ["optimizer", "learning_rate"]),
    ],
)
def test_conditional_parameter_is_sampled_only_when_its_condition_holds(
    optimizer: str, sampled: list[str]
) -> None:
    space = SearchSpace.model_validate(
        {
            "optimizer": OPTIMIZER,
            "momentum": MOMENTUM,
            "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
        }
    )
    suggester = FakeSuggester({"optimizer": optimizer, "momentum": 0.9, "learning_rate": 0.01})
    values = space.sample(suggester)
    assert suggester.names == sampled
    assert list(values) == sampled
    assert values["optimizer"] == optimizer
    assert ("momentum" in values) == (optimizer == "momentum")


def test_parents_are_sampled_before_children_listed_first() -> None:
    space = SearchSpace.model_validate(
        {
            "nesterov": {
                "type": "categorical",
                "choices": [True, False],
                "when": {"momentum": [0.9]},
            },
            "momentum": {
                "type": "categorical",
                "choices": [0.0, 0.9],
                "when": {"optimizer": ["sgd"]},
            },
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "optimizer": OPTIMIZER,
        }
    )
    assert space.ordered_names() == ["optimizer", "momentum", "nesterov", "dropout"]
    suggester = FakeSuggester(
        {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "dropout": 0.1}
    )
    values = space.sample(suggester)
    assert suggester.names == ["optimizer", "momentum", "nesterov", "dropout"]
    assert values == {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "dropout": 0.1}


def test_child_of_an_inactive_parent_is_not_sampled() -> None:
    space = SearchSpace.model_validate(
        {
            "optimizer": OPTIMIZER,
            "momentum": {
                "type": "categorical",
                "choices": [0.0, 0.9],
                "when": {"optimizer": ["sgd"]},
            },
            "nesterov": {
                "type": "categorical",
                "choices": [True, False],
                "when": {"momentum": [0.9]},
            },
        }
    )
    suggester = FakeSuggester({"optimizer": "adam"})
    assert space.sample(suggester) == {"optimizer": "adam"}
    assert suggester.names == ["optimizer"]


@pytest.mark.parametrize(
    ("optimizer", "regularizer", "active"),
    [
        ("momentum", "l2", True),
        ("momentum", "none", False),
        ("adam", "l2", False),
        ("adam", "none", False),
    ],
)
def test_every_condition_of_a_when_must_hold(
    optimizer: str, regularizer: str, active: bool
) -> None:
    space = SearchSpace.model_validate(
        {
            "optimizer": OPTIMIZER,
            "regularizer": {"type": "categorical", "choices": ["none", "l2"]},
            "x": {
                "type": "float",
                "low": 0.0,
                "high": 1.0,
                "when": {"optimizer": ["momentum"], "regularizer": ["l2"]},
            },
        }
    )
    suggester = FakeSuggester({"optimizer": optimizer, "regularizer": regularizer, "x": 0.5})
    values = space.sample(suggester)
    assert ("x" in values) is active
    assert space.is_active("x", values) is active


def test_is_active_is_false_while_a_parent_is_missing() -> None:
    space = SearchSpace.model_validate({"optimizer": OPTIMIZER, "momentum": MOMENTUM})
    assert not space.is_active("momentum", {})
    assert space.is_active("momentum", {"optimizer": "momentum"})
    assert space.is_active("optimizer", {})


def test_int_and_float_calls_pass_bounds_step_and_log_through() -> None:
    space = SearchSpace.model_validate(
        {
            "units": {"type": "int", "low": 16, "high": 256, "log": True},
            "kernel_size": {"type": "int", "low": 1, "high": 7, "step": 2},
            "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
            "batch_size": {"type": "categorical", "choices": [32, 64]},
        }
    )
    suggester = FakeSuggester(
        {"units": 64, "kernel_size": 3, "learning_rate": 0.01, "dropout": 0.2, "batch_size": 64}
    )
    values = space.sample(suggester)
    assert suggester.calls == [
        ("int", "units", {"low": 16, "high": 256, "step": 1, "log": True}),
        ("int", "kernel_size", {"low": 1, "high": 7, "step": 2, "log": False}),
        ("float", "learning_rate", {"low": 1e-4, "high": 0.1, "step": None, "log": True}),
        ("float", "dropout", {"low": 0.0, "high": 0.5, "step": 0.1, "log": False}),
        ("categorical", "batch_size", {"choices": [32, 64]}),
    ]
    assert values == {
        "units": 64,
        "kernel_size": 3,
        "learning_rate": 0.01,
        "dropout": 0.2,
        "batch_size": 64,
    }


def test_bool_choices_stay_bools() -> None:
    space = SearchSpace.model_validate(
        {
            "nesterov": {"type": "categorical", "choices": [True, False]},
            "units": {"type": "categorical", "choices": [1, 0]},
            "x": {"type": "float", "low": 0.0, "high": 1.0, "when": {"nesterov": [True]}},
        }
    )
    nesterov = space["nesterov"]
    units = space["units"]
    assert isinstance(nesterov, CategoricalParam)
    assert isinstance(units, CategoricalParam)
    assert [type(c) for c in nesterov.choices] == [bool, bool]
    assert [type(c) for c in units.choices] == [int, int]

    suggester = FakeSuggester({"nesterov": True, "units": 1, "x": 0.5})
    values = space.sample(suggester)
    _, _, call = suggester.calls[0]
    assert [type(c) for c in call["choices"]] == [bool, bool]
    assert values["nesterov"] is True
    assert values["x"] == 0.5

    suggester = FakeSuggester({"nesterov": False, "units": 0})
    assert space.sample(suggester) == {"nesterov": False, "units": 0}


def test_space_is_frozen() -> None:
    space = SearchSpace.model_validate({"optimizer": OPTIMIZER})
    with pytest.raises(ValidationError):
        setattr(space, "root", {})  # noqa: B010 (mypy knows the field is read-only)

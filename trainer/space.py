"""The declarative search space a study spec carries, and its define-by-run sampling.

A space maps parameter names to a distribution:

    {"optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]},
     "momentum":  {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": ["momentum"]}},
     "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": true}}

`when` makes a parameter conditional: it exists only while every named parameter is active and
has one of the listed values. Sampling goes through the small `Suggester` protocol (an Optuna
`Trial` satisfies it), so this module needs no Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictBool, model_validator

from trainer.spec_error import SpecError

Choice = StrictBool | int | float | str | None
"""A categorical choice: what Optuna can store (bool is checked first so True stays a bool)."""


class Suggester(Protocol):
    """What sampling needs from the optimizer; `optuna.trial.Trial` matches it."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Choice]) -> Choice: ...


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: dict[str, list[Choice]] | None = Field(
        default=None,
        description="Active only while each named parameter takes one of the listed values.",
    )

    @model_validator(mode="after")
    def _check_when(self) -> _Param:
        for parent, values in (self.when or {}).items():
            if not values:
                raise ValueError(f"'when' condition on {parent!r} lists no values")
        return self


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_choices(self) -> CategoricalParam:
        if len({repr(c) for c in self.choices}) != len(self.choices):
            raise ValueError("choices must be distinct")
        return self


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low < 1:
            raise ValueError(f"a log-scale range needs low >= 1, got {self.low}")
        if self.log and self.step != 1:
            raise ValueError("step and log cannot be combined")
        return self


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(default=None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self


Param = Annotated[CategoricalParam | IntParam | FloatParam, Field(discriminator="type")]


class SearchSpace(RootModel[dict[str, Param]]):
    """Parameter name → distribution, checked for dangling or contradictory conditions."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _check_conditions(self) -> SearchSpace:
        for name, param in self.root.items():
            for parent, values in (param.when or {}).items():
                at = ("search_space", name, "when", parent)
                if parent == name:
                    raise SpecError(at, f"{name!r}: 'when' refers to the parameter itself")
                target = self.root.get(parent)
                if target is None:
                    raise SpecError(
                        at,
                        f"{name!r}: 'when' refers to {parent!r}, which is not in the search space",
                    )
                if isinstance(target, CategoricalParam):
                    impossible = [v for v in values if v not in target.choices]
                    if impossible:
                        raise SpecError(
                            at,
                            f"{name!r}: 'when' {parent!r} values {impossible} are not among its "
                            f"choices {target.choices}",
                        )
        self.ordered_names()  # raises on a cycle
        return self

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self.root)

    def __getitem__(self, name: str) -> Param:
        return self.root[name]

    def __len__(self) -> int:
        return len(self.root)

    def ordered_names(self) -> list[str]:
        """Names with every condition's parents before their children (spec order otherwise)."""
        ordered: list[str] = []
        state: dict[str, str] = {}

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "visiting":
                raise SpecError(
                    ("search_space", name, "when"),
                    f"conditions form a cycle: {' -> '.join((*chain, name))}",
                )
            state[name] = "visiting"
            for parent in self.root[name].when or {}:
                visit(parent, (*chain, name))
            state[name] = "done"
            ordered.append(name)

        for name in self.root:
            visit(name, ())
        return ordered

    def is_active(self, name: str, values: dict[str, Any]) -> bool:
        """Whether `name` exists given the values sampled so far (parents are sampled first)."""
        return all(
            parent in values and values[parent] in allowed
            for parent, allowed in (self.root[name].when or {}).items()
        )

    def sample(self, suggester: Suggester) -> dict[str, Any]:
        """Sample every active parameter, define-by-run, parents first."""
        values: dict[str, Any] = {}
        for name in self.ordered_names():
            if not self.is_active(name, values):
                continue
            param = self.root[name]
            if isinstance(param, CategoricalParam):
                values[name] = suggester.suggest_categorical(name, param.choices)
            elif isinstance(param, IntParam):
                values[name] = suggester.suggest_int(
                    name, param.low, param.high, step=param.step, log=param.log
                )
            else:
                values[name] = suggester.suggest_float(
                    name, param.low, param.high, step=param.step, log=param.log
                )
        return values
